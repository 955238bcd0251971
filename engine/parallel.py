"""Profile building on several cores: worker processes that each plan a slice of people.

The key space is cut into slices at person keys sampled from the customers index (a few
slices per worker, handed out as workers finish, so a slow slice does not hold the run).
Each worker opens its own database connection, streams its slice, and builds, segments,
maps and diffs every person in it (``planner``); it sends back only the changes to push
(nothing at all in a dry run), each person's plan to keep when the run keeps them
(``state.planned``), and, per slice, a ``Tally``. The run's own process keeps
everything that touches a destination or the ledger: it pushes batches and writes
acknowledgements exactly as a single-process run does, so one HTTP rate budget per
account and "a crash replays at most one batch" hold unchanged.

Workers are child processes (``crmsync.child``): fresh interpreters that inherit no
state, so they get a picklable ``PlanJob`` and compile the segment rules and the mappings
themselves, from the rule text and the validated mapping specs the run loaded (never
from the files again). Pipes carry a bounded number of messages, so a worker waits while
the parent pushes: memory stays flat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import Any, cast

from sqlalchemy.engine import Connection, make_url

from crmsync import child
from crmsync.child import Child, ChildError, Pipes
from crmsync.contract import Change
from crmsync.cpus import usable_cpus
from crmsync.diff import Policy
from crmsync.fields import ProfileField
from crmsync.profile_scope import KeyRange, ProfileContext
from engine.planner import Planner, Tally, Target
from state.planned import PlannedRow
from state.profile_reads import customer_count, key_boundaries, ranges

CHUNK = 500  # changes per message from a worker
PLANS_CHUNK = 5000  # planned people per message
SLICES_PER_WORKER = 4
PEOPLE_PER_WORKER = 25_000  # fewer customers than this per worker: not worth starting one
Deliver = Callable[[int, int, Change], None]  # (slice, destination index, change)
Finished = Callable[[int], None]  # a slice's changes have all been delivered
Keep = Callable[[list[PlannedRow]], None]  # people planned, to keep


ParallelError = ChildError  # a worker process could not plan its slice


@dataclass(frozen=True, slots=True)
class PlanJob:
    """Everything a worker needs to plan slices, all picklable."""

    state_url: str
    ctx: ProfileContext
    segment_rules: Mapping[str, str]
    fields: Mapping[str, ProfileField]
    targets: tuple[Target, ...]  # their mappings pickle as the specs the run validated
    policy: Policy
    as_of: datetime
    samples: int
    send_changes: bool  # False for a dry run: nothing will be pushed
    send_plans: bool = False  # each person's plan, for the run to keep

    def planner(self) -> Planner:
        from crmsync.segments import SegmentSet

        segments = SegmentSet.compile(self.segment_rules, self.fields)
        return Planner(self.ctx, segments, self.targets, self.policy, self.as_of, self.samples)


def default_workers() -> int:
    return min(2, usable_cpus())


def worker_count(conn: Connection, sources: Sequence[str], wanted: int | None) -> int:
    """How many workers a run starts: ``wanted`` when the configuration sets it; else the
    default, fewer for a small store, since starting one (a new interpreter) takes about a
    second."""
    if wanted is not None:
        return wanted
    default = default_workers()
    if default <= 1:
        return 1
    return max(1, min(default, customer_count(conn, sources) // PEOPLE_PER_WORKER))


def slices_for(conn: Connection, sources: Sequence[str], workers: int) -> list[KeyRange]:
    return ranges(key_boundaries(conn, sources, workers * SLICES_PER_WORKER))


def shared_database(url: str) -> bool:
    """Whether other processes can open the same database (not an in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in url


def _start(number: int, job: PlanJob) -> Child:
    worker = child.start(f"profile worker crmsync-plan-{number}", "engine.parallel:worker_main")
    worker.send(job)
    return worker


def can_start_workers() -> bool:
    return child.can_start()


def run_workers(
    job: PlanJob,
    slices: Sequence[KeyRange],
    workers: int,
    deliver: Deliver,
    finished: Finished,
    keep: Keep | None = None,
) -> Tally:
    """Plans ``slices`` on ``workers`` processes, delivering changes as they arrive with
    their slice's number, and calling ``finished`` once a slice has no more (and ``keep``
    with the people planned, when the job sends them); returns the tallies added up in
    slice (so key) order."""
    pending = deque(enumerate(slices))
    tallies: dict[int, Tally] = {}
    running: dict[Pipe, Child] = {}
    try:
        for number in range(min(workers, len(slices))):
            worker = _start(number, job)
            running[worker.results] = worker
            worker.send(pending.popleft())
        while running:
            for pipe in wait(list(running)):
                assert isinstance(pipe, Pipe)
                _receive(running[pipe], running, pending, tallies, deliver, finished, keep)
    finally:
        for worker in running.values():
            worker.stop()
    total = Tally()
    for index in sorted(tallies):
        total.add(tallies[index], job.samples)
    return total


def _receive(
    worker: Child,
    running: dict[Pipe, Child],
    pending: deque[tuple[int, KeyRange]],
    tallies: dict[int, Tally],
    deliver: Deliver,
    finished: Finished,
    keep: Keep | None,
) -> None:
    message = cast(tuple[Any, ...], worker.receive())
    kind = message[0]
    if kind == "changes":
        _, part, chunk = message
        for index, change in chunk:
            deliver(part, index, change)
    elif kind == "planned":
        if keep is not None:
            keep(message[2])
    elif kind == "done":
        tallies[message[1]] = message[2]
        finished(message[1])
        task = pending.popleft() if pending else None
        worker.send(task)
        if task is None:  # told to stop; stop() reaps it (terminating it if it lingers)
            del running[worker.results]
            worker.stop()
    else:
        child.raise_reported(message, "profile worker")


def worker_main(task_fd: str, result_fd: str, parent: str) -> None:
    """A worker's whole life: plan slices until told to stop or the parent is gone."""
    child.serve(task_fd, result_fd, parent, _plan_slices)


def _plan_slices(pipes: Pipes) -> None:
    from state.store import Store

    tasks, results = pipes.tasks, pipes.results
    job = cast(PlanJob, tasks.recv())
    planner = job.planner()
    store = Store(job.state_url, migrate=False)
    try:
        with store.engine.connect() as conn:
            while (task := tasks.recv()) is not None:
                index, keys = task
                tally = planner.new_tally()
                chunk: list[tuple[int, Change]] = []
                plans = _Plans(results, index)
                for item in planner.changes(
                    conn,
                    tally,
                    keys,
                    pipes.check_parent,
                    planned=plans.add if job.send_plans else None,
                ):
                    if job.send_changes:
                        chunk.append(item)
                        if len(chunk) >= CHUNK:
                            results.send(("changes", index, chunk))
                            chunk = []
                if chunk:
                    results.send(("changes", index, chunk))
                plans.send()
                results.send(("done", index, tally))
    finally:
        store.close()


class _Plans:
    """A slice's planned people, sent to the run a chunk at a time."""

    def __init__(self, results: Pipe, index: int) -> None:
        self.results, self.index = results, index
        self.rows: list[PlannedRow] = []

    def add(self, row: PlannedRow) -> None:
        self.rows.append(row)
        if len(self.rows) >= PLANS_CHUNK:
            self.send()

    def send(self) -> None:
        if self.rows:
            self.results.send(("planned", self.index, self.rows))
            self.rows = []
