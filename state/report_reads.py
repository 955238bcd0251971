"""What a segment report reads from the state database, on a connection that cannot write.

The people come as the profile streams a run reads (``profile_reads``), merge-joined with
two more key-ordered streams: the order lines of the orders a profile counts (products
are not kept in profiles) and the segments each person had at the pipeline's last
planning (``planned``), which is what "movement since the last run" is counted from. No
source and no destination is read, and nothing is written: the CLI hands over the engine
of a store opened read-only (``Store(url, read_only=True)``, ``state.readonly``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from crmsync.errors import StateError
from crmsync.insights.model import Baseline, PersonRows
from crmsync.merge_join import grouped, keyed, merge_groups
from crmsync.profile_scope import EVERYONE, ProfileContext
from state import schema
from state.dialect import bytewise
from state.planned import SEPARATOR
from state.profile_reads import (
    PROFILE_STREAMS,
    execute,
    in_range,
    links,
    order_filter,
    profile_streams,
)
from state.timeutil import from_ms

_LINES, _BEFORE = PROFILE_STREAMS, PROFILE_STREAMS + 1
# what reading can raise: SQLAlchemy's errors, and SQLite's own from the streams that
# read through the driver's cursor (``profile_reads.execute``)
_READ_ERRORS = (SQLAlchemyError, sqlite3.Error)


class ReportReader:
    """``crmsync.insights.ReportSource`` over the state database, on one connection of
    ``engine`` (read-only); a context manager."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def __enter__(self) -> ReportReader:
        try:
            self._conn = self.engine.connect()
        except _READ_ERRORS as exc:
            raise _state_error(exc) from exc
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            self._conn.rollback()  # nothing was written: there is nothing to keep
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "use the reader as a context manager"
        return self._conn

    def baseline(self, pipeline: str) -> Baseline | None:
        """The pipeline's last planning (None: never planned), with the last run that
        started by then."""
        try:
            return self._baseline(pipeline)
        except _READ_ERRORS as exc:
            raise _state_error(exc) from exc

    def _baseline(self, pipeline: str) -> Baseline | None:
        p, r = schema.plannings, schema.runs
        row = self.conn.execute(
            select(p.c.as_of, p.c.profiles, p.c.started_at).where(p.c.pipeline == pipeline)
        ).first()
        if row is None:
            return None
        run_id = self.conn.execute(
            select(func.max(r.c.id)).where(
                r.c.pipeline == pipeline, r.c.started_at <= row.started_at
            )
        ).scalar()
        as_of = from_ms(row.as_of)
        assert as_of is not None
        return Baseline(as_of, int(row.profiles), run_id)

    def people(self, ctx: ProfileContext, pipeline: str) -> Iterator[PersonRows]:
        """Everyone with rows in the pipeline's sources, or planned at its last planning,
        in person-key order."""
        try:
            yield from self._people(ctx, pipeline)
        except _READ_ERRORS as exc:
            raise _state_error(exc) from exc

    def _people(self, ctx: ProfileContext, pipeline: str) -> Iterator[PersonRows]:
        conn = self.conn
        streams = profile_streams(conn, ctx)
        streams.append(grouped(execute(conn, lines_query(conn, ctx))))
        streams.append(keyed(execute(conn, planned_query(conn, pipeline))))
        for key, slots in merge_groups(streams):
            lines = slots[_LINES]
            planned = slots[_BEFORE]
            before: tuple[str, ...] = ()
            if planned is not None and planned[1]:
                before = tuple(planned[1].split(SEPARATOR))
            yield PersonRows(
                key,
                slots[:PROFILE_STREAMS],
                [row[1:] for row in lines] if lines else (),
                before,
            )


def lines_query(conn: Connection, ctx: ProfileContext) -> Any:
    """(person key, product or sku, category, quantity, line revenue) of every line of the
    orders a profile counts (of the pipeline's sources, in its currency, placed by as_of,
    neither cancelled nor refunded), under the key of the person they belong to: phone
    links as the profile streams make them."""
    o, line, link = schema.orders, schema.order_lines, links(ctx)
    key = func.coalesce(link.c.new_key, o.c.person_key)
    revenue = line.c.quantity * line.c.unit_price_minor - func.coalesce(line.c.discount_minor, 0)
    return (
        select(
            key,
            func.coalesce(line.c.product, line.c.sku),
            line.c.category,
            line.c.quantity,
            revenue,
        )
        .select_from(
            o.join(
                line,
                and_(line.c.source == o.c.source, line.c.order_external_id == o.c.external_id),
            ).outerjoin(link, link.c.old_key == o.c.person_key)
        )
        .where(order_filter(o, ctx), o.c.counted, in_range(conn, o.c.person_key, EVERYONE))
        .order_by(bytewise(conn, key))
    )


def planned_query(conn: Connection, pipeline: str) -> Any:
    t = schema.planned
    return (
        select(t.c.person_key, t.c.segments)
        .where(t.c.pipeline == pipeline)
        .order_by(bytewise(conn, t.c.person_key))
    )


def _state_error(exc: BaseException) -> StateError:
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return StateError(f"cannot read the state database: {type(exc).__name__}: {detail}")
