"""What each pipeline's last planning left behind, and the people the next one must redo.

``planned`` keeps per person the next instant at which time alone may change their plan
and their segments; ``plannings`` the marks of the last planning (``schema``). A run that
may plan incrementally gathers its scope into a temporary table of person keys on the
connection it plans with (``fill_scope``): every stream then reads only those people,
through the key indexes (``profile_reads.within``). The rows a planning produces go to a
temporary table on a connection of their own (``PlannedWriter``) and replace the stored
ones, with the new marks, in one transaction once every change of the run was pushed: a
run that fails before leaves the last marks, so the next run redoes the same people.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    Select,
    Table,
    Text,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union,
)
from sqlalchemy.engine import Connection, Engine

from state import schema
from state.bulk import bulk
from state.dialect import bytewise, upsert_insert
from state.profile_reads import of_sources

_TEMPORARY = MetaData()
# the people a run plans, on the connection that reads their rows
SCOPE = Table(
    "planning_scope",
    _TEMPORARY,
    Column("person_key", schema.KEY, primary_key=True),
    prefixes=["TEMPORARY"],
)
# what a run planned, until it is kept (segments and next_at both None: nobody any more)
FRESH = Table(
    "planned_fresh",
    _TEMPORARY,
    Column("person_key", schema.KEY, primary_key=True),
    Column("next_at", BigInteger),
    Column("segments", Text),
    Column("skips", Text),
    prefixes=["TEMPORARY"],
)
_FRESH_COLUMNS = ("person_key", "next_at", "segments", "skips")  # a ``PlannedRow``
SEPARATOR = "\n"
WRITE_BATCH = 5000

# (person key, next_at, segments, lasting skips), as the planner hands them over
PlannedRow = tuple[str, int | None, str | None, str | None]
Skips = dict[str, dict[str, int]]  # per destination, per lasting skip, how many people


@dataclass(frozen=True, slots=True)
class Planning:
    """The marks of a pipeline's last planning."""

    fingerprint: str
    as_of: int  # ms
    started_at: int  # ms: records staged from then on were not seen
    touched_upto: int  # the last ``touched`` id it had read
    segments: dict[str, int]  # every segment's size
    skips: Skips  # every lasting skip's count
    profiles: int  # people planned
    foreign_orders: int  # orders not in the pipeline's currency


@dataclass(frozen=True, slots=True)
class ScopeCounts:
    """How many people a run must plan again, and whether anything arrived since."""

    people: int
    arrived: bool  # records staged or re-keyed since the last planning


def last_planning(conn: Connection, pipeline: str) -> Planning | None:
    t = schema.plannings
    row = conn.execute(select(t).where(t.c.pipeline == pipeline)).first()
    if row is None:
        return None
    totals = json.loads(row.totals)
    return Planning(
        row.fingerprint,
        row.as_of,
        row.started_at,
        row.touched_upto,
        totals.get("segments", {}),
        totals.get("skips", {}),
        row.profiles,
        row.foreign_orders,
    )


def touched_mark(conn: Connection) -> int:
    """The newest ``touched`` id (0: none yet); a planning reads what came after its
    predecessor's mark, and keeps this one."""
    return int(conn.execute(select(func.max(schema.touched.c.id))).scalar() or 0)


def create_temporary(conn: Connection, table: Table) -> None:
    """(Re)creates a temporary table on ``conn`` (a pooled connection may hold one)."""
    drop_temporary(conn, table)
    table.create(conn)


def drop_temporary(conn: Connection, table: Table) -> None:
    where = "pg_temp" if conn.dialect.name == "postgresql" else "temp"
    conn.execute(text(f"DROP TABLE IF EXISTS {where}.{table.name}"))


def fill_scope(
    conn: Connection,
    pipeline: str,
    planning: Planning,
    *,
    sources: Sequence[str],
    consent_scopes: Sequence[str],
    destinations: Sequence[str],
    due_ms: int,
    now_ms: int,
) -> ScopeCounts:
    """Fills ``SCOPE`` on ``conn`` with everyone whose plan may differ from the last one:

    the people with records staged since it began, the keys records left since (re-keyed
    customers, orders and carts, and a customer's old phone), the people due by their
    ``next_at``, with consent events recorded since, with a failure due for retry or a
    change in flight; then everyone who shares a phone number with any of them, since
    an e-mail-less customer joins the person with its phone's e-mail.
    """
    create_temporary(conn, SCOPE)
    since = planning.started_at
    c, o, k = schema.customers, schema.orders, schema.carts
    arrived: list[Select[Any]] = [
        select(t.c.person_key.label("key")).where(
            t.c.staged_at >= since, of_sources(t.c.source, sources), t.c.person_key.is_not(None)
        )
        for t in (c, o, k)
    ]
    arrived.append(
        select(schema.touched.c.person_key.label("key")).where(
            schema.touched.c.id > planning.touched_upto
        )
    )
    p, e, f, i = schema.planned, schema.consent_events, schema.failures, schema.in_flight
    others: list[Select[Any]] = [
        select(p.c.person_key.label("key")).where(p.c.pipeline == pipeline, p.c.next_at <= due_ms),
        select(e.c.person_key.label("key")).where(
            e.c.recorded_at >= since, e.c.source.in_(consent_scopes)
        ),
        select(f.c.person_key.label("key")).where(
            f.c.destination.in_(destinations), f.c.next_attempt_at <= now_ms
        ),
        select(i.c.person_key.label("key")).where(i.c.destination.in_(destinations)),
    ]
    found = union(*arrived).subquery()
    conn.execute(insert(SCOPE).from_select(["person_key"], select(found.c.key)))
    came = conn.execute(select(SCOPE.c.person_key).limit(1)).first() is not None
    rest = union(*others).subquery()
    new = select(rest.c.key).where(rest.c.key.not_in(select(SCOPE.c.person_key)))
    conn.execute(insert(SCOPE).from_select(["person_key"], new))
    _add_phone_links(conn, sources)
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {SCOPE.name}"))  # a temporary table has no statistics
    people = int(conn.execute(select(func.count()).select_from(SCOPE)).scalar() or 0)
    return ScopeCounts(people, came)


def _add_phone_links(conn: Connection, sources: Sequence[str]) -> None:
    """Adds to ``SCOPE`` every customer's person sharing a phone with someone in it
    (or the phone of a ``p:`` key in it), through the person and phone indexes."""
    c, scoped = schema.customers, SCOPE.c.person_key
    phones = union(
        select(c.c.phone.label("phone")).where(
            c.c.person_key.in_(select(scoped)), c.c.phone.is_not(None)
        ),
        select(func.substr(scoped, 3).label("phone")).where(scoped.like("p:%")),
    ).subquery()
    linked = (
        select(c.c.person_key)
        .where(
            c.c.phone.in_(select(phones.c.phone)),
            of_sources(c.c.source, sources),
            c.c.person_key.not_in(select(scoped)),
        )
        .distinct()
    )
    conn.execute(insert(SCOPE).from_select(["person_key"], linked))


def scope_keys() -> Select[Any]:
    """The person keys in ``SCOPE`` (on the connection that filled it)."""
    return select(SCOPE.c.person_key)


def scope_stream(conn: Connection) -> Select[Any]:
    """The scope's keys in key order: a stream of its own in the merge, so that a key
    with no rows left still comes up (its stored plan is dropped)."""
    return select(SCOPE.c.person_key).order_by(bytewise(conn, SCOPE.c.person_key))


def scoped_totals(conn: Connection, pipeline: str) -> tuple[Counter[str], Skips, int]:
    """The segment sizes, lasting skips and number of the people in ``SCOPE`` as last
    planned."""
    p = schema.planned
    query = (
        select(p.c.segments, p.c.skips, func.count())
        .where(
            p.c.pipeline == pipeline,
            p.c.person_key.in_(select(SCOPE.c.person_key)),
            p.c.segments.is_not(None),
        )
        .group_by(p.c.segments, p.c.skips)
    )
    sizes: Counter[str] = Counter()
    skips: Skips = {}
    people = 0
    for segments, skipped, n in conn.execute(query):
        people += n
        for name in segments.split(SEPARATOR) if segments else ():
            sizes[name] += n
        for item in skipped.split(SEPARATOR) if skipped else ():
            destination, _, decision = item.partition("=")
            counts = skips.setdefault(destination, {})
            counts[decision] = counts.get(decision, 0) + n
    return sizes, skips, people


class PlannedWriter:
    """Collects a planning's rows on a connection of its own, then keeps them (``keep``)
    or forgets them (``close`` without ``keep``)."""

    def __init__(self, engine: Engine) -> None:
        self.conn = engine.connect()
        create_temporary(self.conn, FRESH)
        self.conn.commit()
        self.pending: list[PlannedRow] = []

    def add_one(self, row: PlannedRow) -> None:
        self.pending.append(row)
        if len(self.pending) >= WRITE_BATCH:
            self._write()

    def add(self, rows: Iterable[PlannedRow]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= WRITE_BATCH:
            self._write()

    def _write(self) -> None:
        if self.pending:
            # through the driver (COPY on PostgreSQL): a first planning writes a row per
            # person, in the process that also pushes and records the ledger
            with self.conn.begin():
                bulk(self.conn).insert(FRESH, _FRESH_COLUMNS, self.pending)
            self.pending = []

    def keep(self, pipeline: str, planning: Planning, *, everyone: bool) -> None:
        """Replaces the pipeline's stored plans (all of them with ``everyone``, else
        those of the people planned) and its marks, in one transaction."""
        self._write()
        p, fresh = schema.planned, FRESH
        with self.conn.begin():
            stale = delete(p).where(p.c.pipeline == pipeline)
            if not everyone:
                stale = stale.where(p.c.person_key.in_(select(fresh.c.person_key)))
            self.conn.execute(stale)
            columns = ("person_key", "next_at", "segments", "skips")
            rows = select(literal(pipeline), *(fresh.c[n] for n in columns)).where(
                (fresh.c.segments.is_not(None)) | (fresh.c.next_at.is_not(None))
            )
            self.conn.execute(insert(p).from_select(["pipeline", *columns], rows))
            _store_marks(self.conn, pipeline, planning)
            marks = select(func.min(schema.plannings.c.touched_upto)).scalar_subquery()
            self.conn.execute(delete(schema.touched).where(schema.touched.c.id <= marks))

    def close(self) -> None:
        try:
            if self.conn.in_transaction():
                self.conn.rollback()
            drop_temporary(self.conn, FRESH)
            self.conn.commit()
        finally:
            self.conn.close()


def _store_marks(conn: Connection, pipeline: str, planning: Planning) -> None:
    t = schema.plannings
    values = {
        "pipeline": pipeline,
        "fingerprint": planning.fingerprint,
        "as_of": planning.as_of,
        "started_at": planning.started_at,
        "touched_upto": planning.touched_upto,
        "totals": json.dumps(
            {"segments": planning.segments, "skips": planning.skips}, sort_keys=True
        ),
        "profiles": planning.profiles,
        "foreign_orders": planning.foreign_orders,
    }
    statement = upsert_insert(conn, t)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["pipeline"],
            set_={k: statement.excluded[k] for k in values if k != "pipeline"},
        ),
        values,
    )
