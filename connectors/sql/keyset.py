"""Keyset pages over one table or query, ordered by (updated_at, key).

Each page is one short, read-only statement::

    SELECT ... FROM src
    WHERE (updated_at, key) > (:last_at, :last_key) AND updated_at <= :until
    ORDER BY updated_at, key LIMIT :page

where (last_at, last_key) are the last row of the previous page exactly as the database
returned them; the first page asks for ``updated_at > :since`` instead (or nothing, on a
full read). The position is a value of the rows themselves, not a count of rows, so a row
that changes while the pull pages neither shifts the others nor is skipped: its new
updated_at sorts after the position and a later page, or the next run, reads it. With an
index on (updated_at, key) every page is an index range scan, however deep the pull is.

Records with rows of their own (an order's lines in a lines table) are read in the same
statement: the page above, as a subquery, left-joined to the lines on the record's key
and ordered by (updated_at, key, the lines' order), so one page is one query whatever
the number of lines, and each record's lines arrive right after it. The planner picks
per page between looking the page's keys up in the lines' index and one pass over the
lines table, whichever its statistics say is cheaper.

A full read also takes the records whose updated_at is NULL, in a last pass paged by key
alone; an incremental read cannot know whether they changed and leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.expression import ColumnElement, FromClause, Select

from connectors.sql.config import RowsConfig, SqlStream, UpdatedAtType

Row = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 1000  # rows fetched from the server-side cursor at a time
_ROW_VALUES = frozenset({"postgresql", "sqlite", "mysql", "mariadb"})  # (a, b) > (x, y)


def source_rows(
    table: str | None,
    query: str | None,
    columns: Sequence[str],
    schema: str | None,
    name: str = "src",
) -> FromClause:
    """The table or query as a FROM clause called ``name``, with ``columns`` addressable."""
    declared: list[sa.ColumnClause[Any]] = [sa.column(c) for c in dict.fromkeys(columns)]
    if table is not None:
        owner, _, bare = table.rpartition(".")
        return sa.table(bare, *declared, schema=owner or schema).alias(name)
    assert query is not None
    return sa.text(query).columns(*declared).subquery(name)


def bound_time(moment: datetime, kind: UpdatedAtType, zone: tzinfo) -> Any:
    """``moment`` as the update-time column stores it, for a comparison in SQL.

    Integer epochs are floored: for an integer column ``c``, ``c > floor(t)`` and
    ``c <= floor(t)`` are exactly ``c > t`` and ``c <= t``.
    """
    match kind:
        case "timestamp":
            return moment.astimezone(zone).replace(tzinfo=None)
        case "timestamptz":
            return moment
        case "epoch":
            return (moment - EPOCH) // timedelta(seconds=1)
        case _:
            return (moment - EPOCH) // timedelta(milliseconds=1)


def time_type(kind: UpdatedAtType) -> sa.types.TypeEngine[Any]:
    if kind in ("epoch", "epoch_ms"):
        return sa.BigInteger()
    return sa.DateTime(timezone=kind == "timestamptz")


@dataclass(frozen=True)
class Children:
    """Rows of a table of their own, joined to each record (an order's lines)."""

    rows: RowsConfig
    columns: Sequence[str]  # the child columns a read selects, the join key among them
    attach: str  # the key each record's list of children is put under


class KeysetPages:
    """The statements of one stream, built once; ``pages`` runs them for one read."""

    def __init__(
        self,
        engine: Engine,
        stream: SqlStream,
        *,
        columns: Sequence[str],
        schema: str | None = None,
        zone: tzinfo,
        page_size: int,
        children: Children | None = None,
    ) -> None:
        self.engine = engine
        self.config = stream
        self.zone = zone
        self.page_size = page_size
        self.columns = tuple(dict.fromkeys([stream.key, stream.updated_at, *columns]))
        self.children = children
        self._schema = schema
        src = source_rows(stream.table, stream.query, self.columns, schema)
        at, key = src.c[stream.updated_at], src.c[stream.key]
        stored = time_type(stream.updated_at_type)
        until = at <= sa.bindparam("until", type_=stored)
        base = sa.select(*(src.c[c] for c in self.columns)).select_from(src)
        ordered = base.order_by(at, key).limit(page_size)
        last_at: sa.BindParameter[Any] = sa.bindparam("last_at")
        last_key: sa.BindParameter[Any] = sa.bindparam("last_key")
        after: ColumnElement[bool]
        if engine.dialect.name in _ROW_VALUES:
            after = sa.tuple_(at, key) > sa.tuple_(last_at, last_key)
        else:
            after = sa.and_(at >= last_at, sa.or_(at > last_at, key > last_key))
        nulls = base.where(at.is_(None)).order_by(key).limit(page_size)
        in_time = (stream.updated_at, stream.key)
        self._first_full = self.with_children(ordered.where(until), in_time)
        self._first_since = self.with_children(
            ordered.where(at > sa.bindparam("since", type_=stored), until), in_time
        )
        self._next = self.with_children(ordered.where(after, until), in_time)
        self._nulls_first = self.with_children(nulls, (stream.key,))
        self._nulls_next = self.with_children(nulls.where(key > last_key), (stream.key,))
        # for check: any one record, whatever its time
        self.sample = self.with_children(base.where(at.is_not(None)).limit(1), ())

    def with_children(self, page: Select[Any], order: Sequence[str]) -> Select[Any]:
        """``page`` itself, or ``page`` as a subquery left-joined to the children on the
        key and ordered by ``order`` and then the children's own order."""
        children = self.children
        if children is None:
            return page
        rows = children.rows
        assert rows.key is not None
        parent = page.subquery("page")
        child_columns = [*children.columns, *rows.order_by]
        child = source_rows(rows.table, rows.query, child_columns, self._schema, "child")
        picked = [parent.c[c] for c in self.columns]
        picked += [child.c[c].label(f"child_{n}") for n, c in enumerate(children.columns)]
        joined = parent.outerjoin(child, child.c[rows.key] == parent.c[self.config.key])
        ordering = [*(parent.c[c] for c in order), *(child.c[c] for c in rows.order_by)]
        return sa.select(*picked).select_from(joined).order_by(*ordering)

    def statement(self, since: datetime | None) -> Select[Any]:
        """The first page's statement (``parameters`` gives its parameters)."""
        return self._first_full if since is None else self._first_since

    def parameters(self, since: datetime | None, until: datetime) -> dict[str, Any]:
        """The first page's parameters: the window's ends as the column stores times."""
        kind = self.config.updated_at_type
        params: dict[str, Any] = {"until": bound_time(until, kind, self.zone)}
        if since is not None:
            params["since"] = bound_time(since, kind, self.zone)
        return params

    def pages(
        self,
        since: datetime | None,
        until: datetime,
        *,
        between: Callable[[int], None] | None = None,
    ) -> Iterator[list[Row]]:
        """Pages of records changed in (since, until], oldest first; ``between(n)`` is
        called after the n-th page has been handed over, before the next is asked for."""
        config = self.config
        params = self.parameters(since, until)
        statement = self.statement(since)
        number = 0
        with self.engine.connect() as opened:  # one connection, a transaction per page
            conn = _read_only(opened)
            while True:
                page = self._fetch(conn, statement, params)
                if page:
                    number += 1
                    yield page
                    if between is not None:
                        between(number)
                if len(page) < self.page_size:
                    break
                last = page[-1]
                params = {
                    **params,
                    "last_at": last[config.updated_at],
                    "last_key": last[config.key],
                }
                statement = self._next
            if since is not None:
                return
            statement, params = self._nulls_first, {}
            while True:
                page = self._fetch(conn, statement, params)
                if page:
                    number += 1
                    yield page
                    if between is not None:
                        between(number)
                if len(page) < self.page_size:
                    return
                params = {"last_key": page[-1][config.key]}
                statement = self._nulls_next

    def run(self, statement: Select[Any], params: dict[str, Any]) -> list[Row]:
        """One statement's records, on a connection of its own (see ``_fetch``)."""
        with self.engine.connect() as opened:
            return self._fetch(_read_only(opened), statement, params)

    def _fetch(self, conn: Connection, statement: Select[Any], params: dict[str, Any]) -> list[Row]:
        """One statement's records as dicts, in order, children attached: in a read-only
        transaction of its own, through a server-side cursor ``BATCH`` rows at a time."""
        with conn.begin():
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                statement, params
            )
            names = self.columns
            rows = (row for part in result.partitions() for row in part)
            if self.children is None:
                return [dict(zip(names, row, strict=True)) for row in rows]
            return self._folded(rows, names, self.children)

    def _folded(self, rows: Iterator[Any], names: Sequence[str], children: Children) -> list[Row]:
        """Joined rows folded back into one dict per record with its children in a list;
        the rows of one record are adjacent, since the key is in the ORDER BY."""
        width = len(names)
        key = names.index(self.config.key)
        child_names = tuple(children.columns)
        child_key = width + child_names.index(str(children.rows.key))  # NULL: no child row
        attach = children.attach
        records: list[Row] = []
        current: list[Row] = []
        previous: Any = object()
        for row in rows:
            if row[key] != previous:
                previous = row[key]
                record = dict(zip(names, row[:width], strict=True))
                current = record[attach] = []
                records.append(record)
            if row[child_key] is not None:
                current.append(dict(zip(child_names, row[width:], strict=True)))
        return records


def _read_only(conn: Connection) -> Connection:
    """``conn`` with its transactions read-only where the dialect can say so (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        return conn.execution_options(postgresql_readonly=True)
    return conn


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in one short read-only transaction (PostgreSQL refuses writes in it)."""
    with engine.connect() as opened:
        conn = _read_only(opened)
        with conn.begin():
            yield conn
