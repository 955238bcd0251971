"""A run's work on Celery workers, as the state database sees it (``distributed``).

``work_tasks`` holds one row per task of a run, keyed by (run, task key): the
coordinator writes them queued, and the worker that finishes a task writes its result
(JSON) and ``done`` in the transaction that writes the task's effects. ``planned_changes``
holds what a slice's planning found to push, per destination in the slice's order, and
``planned_people`` each person's plan, for the run to keep once everything was pushed.
``planned_scope`` holds the people an incremental run plans again: the coordinator
copies its scope there (``keep_scope``), cuts it into slices (``scope_boundaries``), and
each plan task reads its slice of it into a temporary table of its own
(``fill_slice_scope``).

A broker may deliver a task twice (a worker killed before it acknowledged, Redis's
visibility timeout, a message published again), and two deliveries may even run at
once. So every task runs under ``claim``: a PostgreSQL advisory lock on its key, held on
a connection of its own for as long as the task runs (a killed worker's session ends and
gives it back), and the task's row says whether to run at all: a task already done, or
of a run no longer under way, is not run again. A slice planned again after a crash
replaces its rows (they are deleted and written in one transaction), never adds to them.

The tables have a metadata of their own, apart from ``state.schema``: they are the
workers' scratch space, emptied when a run ends (``forget_run``); migrations 0011 and
0012 create them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    delete,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from crmsync.contract import Change
from crmsync.profile_scope import KeyRange
from state import schema
from state.bulk import bulk
from state.dialect import upsert_insert
from state.ledger import decode_change, encode_change
from state.planned import FRESH, SCOPE, PlannedRow, create_temporary
from state.profile_reads import cut_points, in_range
from state.timeutil import now_ms

metadata = MetaData()

work_tasks = Table(
    "work_tasks",
    metadata,
    Column("run_id", Integer, primary_key=True),
    # "pull/<source>/<stream>", "prepare/<destination>", "plan/<slice>",
    # "push/<destination>/<slice>/<batch>", "collect/<destination>"; "stop/<destination>"
    # once a destination takes nothing more in the run (``mark_stopped``)
    Column("task", String(200), primary_key=True),
    Column("state", String(16), nullable=False),  # queued | done | failed
    Column("result", Text, nullable=False, default="{}"),  # JSON, the task's own
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),  # deliveries that ran it
    Column("updated_at", BigInteger, nullable=False),
)

planned_changes = Table(
    "planned_changes",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("destination", schema.SOURCE, primary_key=True),
    Column("part", Integer, primary_key=True),  # the slice of the key space
    Column("seq", Integer, primary_key=True),  # the change's place in its slice
    Column("person_key", schema.KEY, nullable=False),
    Column("change", Text, nullable=False),  # state.ledger.encode_change
)

planned_people = Table(
    "planned_people",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("person_key", schema.KEY, primary_key=True),
    Column("next_at", BigInteger),
    Column("segments", Text),
    Column("skips", Text),
)

# the people an incremental run on workers plans again (migration 0012)
planned_scope = Table(
    "planned_scope",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("person_key", schema.KEY, primary_key=True),
)

# membership moves a run's pushes hold until they fill a call, and why a move of a
# person answered pending failed (``state.held_moves``; migration 0012)
held_moves = Table(
    "held_moves",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("destination", schema.SOURCE, primary_key=True),
    Column("grp", String(200), primary_key=True),  # the vendor's group id
    Column("side", String(1), primary_key=True),  # "+" join, "-" leave
    Column("member", String(320), primary_key=True),  # the vendor's member id
    Column("seq", BigInteger, nullable=False),  # oldest first
    Column("sending", Integer, nullable=False, default=0),  # 1: taken into a call
)

held_failures = Table(
    "held_failures",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("destination", schema.SOURCE, primary_key=True),
    Column("member", String(320), primary_key=True),
    Column("reason", Text, nullable=False),
)

QUEUED, DONE, FAILED = "queued", "done", "failed"
WRITE_BATCH = 5000  # rows per bulk write while a slice is written


@dataclass(frozen=True, slots=True)
class TaskRow:
    state: str
    result: dict[str, Any]
    error: str | None
    attempts: int


def add_tasks(conn: Connection, run_id: int, keys: Sequence[str]) -> None:
    """Queues these tasks of the run (one already there is left as it is)."""
    if not keys:
        return
    rows = [
        {"run_id": run_id, "task": key, "state": QUEUED, "result": "{}", "updated_at": now_ms()}
        for key in keys
    ]
    statement = upsert_insert(conn, work_tasks).on_conflict_do_nothing(
        index_elements=["run_id", "task"]
    )
    conn.execute(statement, rows)


def tasks(conn: Connection, run_id: int, prefix: str) -> dict[str, TaskRow]:
    """The run's tasks whose key starts with ``prefix``, by key."""
    t = work_tasks
    query = select(t.c.task, t.c.state, t.c.result, t.c.error, t.c.attempts).where(
        t.c.run_id == run_id, t.c.task.startswith(prefix, autoescape=True)
    )
    return {
        key: TaskRow(state, json.loads(result), error, attempts)
        for key, state, result, error, attempts in conn.execute(query)
    }


def task_states(conn: Connection, run_id: int, prefix: str) -> dict[str, str]:
    """The state of each of the run's tasks whose key starts with ``prefix`` (cheap:
    no results)."""
    t = work_tasks
    query = select(t.c.task, t.c.state).where(
        t.c.run_id == run_id, t.c.task.startswith(prefix, autoescape=True)
    )
    return {key: state for key, state in conn.execute(query)}


def finish(
    conn: Connection,
    run_id: int,
    task: str,
    result: dict[str, Any],
    *,
    error: str | None = None,
) -> None:
    """Records the task's end (``done``, or ``failed`` with ``error``), in the caller's
    transaction: the one that writes the task's effects; on PostgreSQL it notifies the
    run's ``channel`` when that commits."""
    t = work_tasks
    conn.execute(
        update(t)
        .where(t.c.run_id == run_id, t.c.task == task)
        .values(
            state=FAILED if error is not None else DONE,
            result=json.dumps(result, sort_keys=True, default=str),
            error=error,
            updated_at=now_ms(),
        )
    )
    if conn.dialect.name == "postgresql":  # the coordinator hears it at the commit
        conn.execute(
            text("SELECT pg_notify(:channel, :task)"), {"channel": channel(run_id), "task": task}
        )


def channel(run_id: int) -> str:
    """The PostgreSQL channel a run's tasks notify as they end (``finish``), which its
    coordinator listens on instead of waiting out a poll."""
    return f"crmsync_run_{run_id}"


def _stop_key(destination: str) -> str:
    return f"stop/{destination}"


def mark_stopped(
    conn: Connection, run_id: int, destination: str, error: str, *, full: bool
) -> None:
    """Notes that ``destination`` takes nothing more in this run (it failed as a whole,
    or can take no more: ``full``); the first batch to say so gives the reason."""
    result = json.dumps({"error": error, "full": full}, sort_keys=True)
    row = {
        "run_id": run_id,
        "task": _stop_key(destination),
        "state": DONE,
        "result": result,
        "attempts": 0,
        "updated_at": now_ms(),
    }
    statement = upsert_insert(conn, work_tasks).on_conflict_do_nothing(
        index_elements=["run_id", "task"]
    )
    conn.execute(statement, row)


def stopped(conn: Connection, run_id: int, destination: str) -> tuple[str, bool] | None:
    """(why, full) when ``destination`` takes nothing more in this run."""
    t = work_tasks
    found = conn.execute(
        select(t.c.result).where(t.c.run_id == run_id, t.c.task == _stop_key(destination))
    ).scalar()
    if found is None:
        return None
    data = json.loads(found)
    return str(data["error"]), bool(data["full"])


def _lock_key(run_id: int, task: str) -> int:
    digest = hashlib.blake2b(f"crmsync-task/{run_id}/{task}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def claim(engine: Engine, run_id: int, task: str) -> Iterator[bool]:
    """Holds the task's lock while the caller works; yields whether to do the work: not
    when the task is done (or failed) already, nor when its run is no longer under way.
    A second delivery of a task that is running waits here for the first to end."""
    key = {"key": _lock_key(run_id, task)}
    with engine.connect() as lock:
        lock.execute(text("SELECT pg_advisory_lock(:key)"), key)
        lock.commit()
        try:
            yield _start(engine, run_id, task)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:key)"), key)
            lock.commit()


def _start(engine: Engine, run_id: int, task: str) -> bool:
    t, runs = work_tasks, schema.runs
    with engine.begin() as conn:
        status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
        state = conn.execute(
            select(t.c.state).where(t.c.run_id == run_id, t.c.task == task)
        ).scalar()
        if status != "running" or state in (DONE, FAILED):
            return False
        conn.execute(
            update(t)
            .where(t.c.run_id == run_id, t.c.task == task)
            .values(attempts=t.c.attempts + 1, updated_at=now_ms())
        )
        return True


class SliceWriter:
    """Writes one slice's planned changes and people, on the caller's connection (one
    transaction: the slice's rows are replaced whole, or not at all), by the driver's bulk
    write (``state.bulk``: ``COPY`` on PostgreSQL): the planning on a worker spent a third
    of its time building SQLAlchemy's parameters for row-by-row inserts."""

    def __init__(self, conn: Connection, run_id: int, part: int, destinations: Sequence[str]):
        self.conn, self.run_id, self.part = conn, run_id, part
        self.destinations = tuple(destinations)
        self.counts = [0] * len(self.destinations)
        self._changes: list[tuple[object, ...]] = []
        self._people: list[tuple[object, ...]] = []
        for table in (planned_changes, planned_people):
            conn.execute(delete(table).where(table.c.run_id == run_id, table.c.part == part))

    def change(self, index: int, change: Change) -> None:
        seq = self.counts[index]
        self._changes.append(
            (
                self.run_id,
                self.destinations[index],
                self.part,
                seq,
                change.person_key,
                encode_change(change),
            )
        )
        self.counts[index] = seq + 1
        if len(self._changes) >= WRITE_BATCH:
            self._write()

    def person(self, row: PlannedRow) -> None:
        key, next_at, segments, skips = row
        self._people.append((self.run_id, self.part, key, next_at, segments, skips))
        if len(self._people) >= WRITE_BATCH:
            self._write()

    def close(self) -> dict[str, int]:
        """Writes what is left; returns how many changes each destination got."""
        self._write()
        return dict(zip(self.destinations, self.counts, strict=True))

    def _write(self) -> None:
        writer = bulk(self.conn)
        if self._changes:
            writer.insert(planned_changes, _CHANGE_COLUMNS, self._changes)
            self._changes = []
        if self._people:
            writer.insert(planned_people, _PEOPLE_COLUMNS, self._people)
            self._people = []


_CHANGE_COLUMNS = ("run_id", "destination", "part", "seq", "person_key", "change")
_PEOPLE_COLUMNS = ("run_id", "part", "person_key", "next_at", "segments", "skips")


Segment = tuple[int, int, int]  # (slice, start, stop): positions of one slice's changes


def batch_changes(
    conn: Connection, run_id: int, destination: str, segments: Sequence[Segment]
) -> list[Change]:
    """A push batch's changes for ``destination``: each segment's positions ``start`` to
    ``stop - 1`` of its slice's changes, the segments in their order (a batch may run from
    the end of one slice into the next, so that every batch but the last is full)."""
    p = planned_changes
    found: list[Change] = []
    for part, start, stop in segments:
        query = (
            select(p.c.change)
            .where(
                p.c.run_id == run_id,
                p.c.destination == destination,
                p.c.part == part,
                p.c.seq >= start,
                p.c.seq < stop,
            )
            .order_by(p.c.seq)
        )
        found += [decode_change(change) for (change,) in conn.execute(query)]
    return found


def cut_batches(counts: Sequence[int], size: int) -> list[list[Segment]]:
    """Batches of ``size`` changes over the slices' changes taken in slice order (``counts``
    per slice): each batch the segments of the slices it spans."""
    batches: list[list[Segment]] = []
    current: list[Segment] = []
    room = size
    for part, total in enumerate(counts):
        start = 0
        while start < total:
            take = min(room, total - start)
            current.append((part, start, start + take))
            start += take
            room -= take
            if room == 0:
                batches.append(current)
                current, room = [], size
    if current:
        batches.append(current)
    return batches


def fill_fresh(conn: Connection, run_id: int) -> None:
    """Copies the run's planned people into ``state.planned``'s temporary table on
    ``conn`` (a ``PlannedWriter``'s), for it to keep."""
    p = planned_people
    columns = ("person_key", "next_at", "segments", "skips")
    rows = select(*(p.c[n] for n in columns)).where(p.c.run_id == run_id)
    conn.execute(insert(FRESH).from_select(list(columns), rows))


def keep_scope(conn: Connection, run_id: int) -> None:
    """Copies ``state.planned.SCOPE``, just filled on ``conn`` (the coordinator's), into
    ``planned_scope`` for the run: a temporary table is seen by its own connection only,
    and every plan task reads its slice from here."""
    s = planned_scope
    conn.execute(delete(s).where(s.c.run_id == run_id))
    rows = select(literal(run_id, Integer), SCOPE.c.person_key)
    conn.execute(insert(s).from_select(["run_id", "person_key"], rows))


def run_scope_keys(run_id: int) -> Select[Any]:
    """The person keys of the run's scope (``keep_scope``), on any connection."""
    return select(planned_scope.c.person_key).where(planned_scope.c.run_id == run_id)


def scope_boundaries(conn: Connection, run_id: int, parts: int) -> list[str]:
    """Up to ``parts - 1`` person keys that cut the run's scope into equal slices, in the
    byte-wise order the plan tasks' key ranges use; the scope's own keys, so that every
    slice holds some of it."""
    s = planned_scope
    return cut_points(conn, s.c.person_key, s.c.run_id == run_id, parts)


def fill_slice_scope(conn: Connection, run_id: int, keys: KeyRange) -> None:
    """(Re)creates ``state.planned.SCOPE`` on ``conn`` (a plan task's read connection)
    with the people of the run's scope within ``keys``: the planner then reads only
    them, as a run in one process reads its whole scope."""
    create_temporary(conn, SCOPE)
    s = planned_scope
    rows = select(s.c.person_key).where(s.c.run_id == run_id, in_range(conn, s.c.person_key, keys))
    conn.execute(insert(SCOPE).from_select(["person_key"], rows))
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {SCOPE.name}"))  # a temporary table has no statistics


def forget_run(conn: Connection, run_id: int) -> None:
    """Deletes the run's rows, and those of runs no longer under way (a coordinator that
    died left them)."""
    runs = schema.runs
    ended = select(runs.c.id).where(runs.c.status != "running")
    for table in metadata.sorted_tables:
        conn.execute(delete(table).where(table.c.run_id == run_id))
        conn.execute(delete(table).where(table.c.run_id.in_(ended)))
