"""Bulk writes and look-ups on the driver's own connection, for staging.

Staging writes tens of thousands of rows per transaction; SQLAlchemy's per-row parameter
building cost more than SQLite's own work, so these go to the DBAPI connection under
the caller's transaction, with SQL text prepared once per table:

- SQLite: ``executemany`` of one prepared statement (``sqlite3`` keeps it compiled), and
  key look-ups in chunks of ``IN (?, ...)``;
- PostgreSQL: ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT``
  (a round trip per batch rather than per row), look-ups and deletes with ``= ANY(array)``,
  and updates joined to ``unnest`` of parameter arrays.

Every statement is a seek on a primary key or an index (``tests/test_stage_plans.py``).
Names come from ``state.schema`` only, never from input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Connection

Row = tuple[Any, ...]

_CHUNK = 500  # SQLite parameters per IN (...) list; every SQLite allows 999
# psycopg sends lists of ids as binary arrays: its text format checks each element for
# characters to quote, which costs more than the look-up itself
_BINARY = True


class Bulk(Protocol):
    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        """``columns`` of the rows of ``source`` whose ``key`` column is among ``ids``."""
        ...

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        """Whether any row matches every ``fixed`` column (an index seek, no count)."""
        ...

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Inserts ``rows``; a row whose primary key is taken replaces the other columns."""
        ...

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None: ...

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        """Deletes the rows matching every ``fixed`` column whose ``key`` is among ``ids``."""
        ...

    def assign(
        self, table: Table, source: str, key: str, column: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        """For each (key value, new value): sets ``column`` of the rows of ``source`` with
        that ``key`` where it differs (rows already equal are not written)."""
        ...


def bulk(conn: Connection) -> Bulk:
    """The bulk writer for ``conn``'s engine, writing inside its current transaction."""
    if conn.dialect.name == "postgresql":
        return PostgresBulk(conn)
    return SqliteBulk(conn)


def _primary_key(table: Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


@cache
def _upsert_sql(table: Table, columns: tuple[str, ...], values: str) -> str:
    """``values``: a VALUES list or a SELECT giving ``columns`` (not SQLite's INSERT ...
    SELECT, which would need a WHERE clause before ON CONFLICT)."""
    keys = _primary_key(table)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) {values} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


class SqliteBulk:
    def __init__(self, conn: Connection) -> None:
        self.raw: Any = conn.connection.driver_connection

    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        listed = ", ".join(columns)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT {listed} FROM {table.name} WHERE source = ? AND {key} IN ({marks})"
            yield from self.raw.execute(sql, (source, *chunk))

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        where = " AND ".join(f"{c} = ?" for c in fixed)
        sql = f"SELECT 1 FROM {table.name} WHERE {where} LIMIT 1"
        return self.raw.execute(sql, tuple(fixed.values())).fetchone() is not None

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if rows:
            marks = f"VALUES ({', '.join('?' * len(columns))})"
            self.raw.executemany(_upsert_sql(table, tuple(columns), marks), rows)

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if rows:
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
            self.raw.executemany(sql, rows)

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        where = " AND ".join(f"{c} = ?" for c in fixed)
        sql = f"DELETE FROM {table.name} WHERE {where} AND {key} = ?"
        values = tuple(fixed.values())
        self.raw.executemany(sql, [(*values, i) for i in ids])

    def assign(
        self, table: Table, source: str, key: str, column: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        if pairs:
            sql = (
                f"UPDATE {table.name} SET {column} = ? "
                f"WHERE source = ? AND {key} = ? AND {column} IS NOT ?"
            )
            self.raw.executemany(sql, [(new, source, k, new) for k, new in pairs])


class PostgresBulk:
    def __init__(self, conn: Connection) -> None:
        self.raw: Any = conn.connection.driver_connection

    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        if not ids:
            return
        sql = (
            f"SELECT {', '.join(columns)} FROM {table.name} "
            f"WHERE source = %s AND {key} = ANY(%s::text[])"
        )
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (source, list(ids)), binary=_BINARY)
            yield from cursor.fetchall()

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        where = " AND ".join(f"{c} = %s" for c in fixed)
        with self.raw.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table.name} WHERE {where} LIMIT 1", (*fixed.values(),))
            return cursor.fetchone() is not None

    def _copy(self, cursor: Any, target: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        with cursor.copy(f"COPY {target} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        temporary = f"crmsync_stage_{table.name}"
        listed = ", ".join(columns)
        with self.raw.cursor() as cursor:
            # dropped at commit, or below when one transaction upserts twice
            cursor.execute(
                f"CREATE TEMPORARY TABLE {temporary} (LIKE {table.name} INCLUDING DEFAULTS) "
                "ON COMMIT DROP"
            )
            self._copy(cursor, temporary, columns, rows)
            select = f"SELECT {listed} FROM {temporary}"
            cursor.execute(_upsert_sql(table, tuple(columns), select))
            cursor.execute(f"DROP TABLE {temporary}")

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if rows:
            with self.raw.cursor() as cursor:
                self._copy(cursor, table.name, columns, rows)

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        where = " AND ".join(f"{c} = %s" for c in fixed)
        sql = f"DELETE FROM {table.name} WHERE {where} AND {key} = ANY(%s::text[])"
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (*fixed.values(), list(ids)), binary=_BINARY)

    def assign(
        self, table: Table, source: str, key: str, column: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        if not pairs:
            return
        # the key list again as ``= ANY``: an index condition whatever join the planner
        # picks, so that it never reads all of the source's rows to join them
        sql = (
            f"UPDATE {table.name} AS t SET {column} = p.new "
            "FROM unnest(%s::text[], %s::text[]) AS p(k, new) "
            f"WHERE t.source = %s AND t.{key} = ANY(%s::text[]) AND t.{key} = p.k "
            f"AND t.{column} IS DISTINCT FROM p.new"
        )
        keys = [k for k, _ in pairs]
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (keys, [new for _, new in pairs], source, keys), binary=_BINARY)


class Overlapped:
    """A ``Bulk`` whose writes run in order on one worker thread, so that the caller
    builds the next rows while the driver writes the last ones (SQLite releases the GIL
    while it steps through a statement; psycopg while it waits for the server).

    Only one thread uses the connection at a time: a look-up first waits for the writes
    before it, and so must the caller before it uses the connection itself (``flush``).
    After a failed write the rest are skipped; ``flush`` and ``close`` raise its error.
    """

    def __init__(self, inner: Bulk) -> None:
        self.inner = inner
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-stage")
        self.pending: list[Future[None]] = []
        self.failed = False

    def _submit(self, write: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            if self.failed:
                return
            try:
                write(*args)
            except BaseException:
                self.failed = True
                raise

        self.pending.append(self.pool.submit(run))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for done in pending:
            done.result()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.failed = True  # whatever is left does not write
            self.pool.shutdown(wait=True)

    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        self.flush()
        return iter(list(self.inner.select_in(table, columns, source, key, ids)))

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        self.flush()
        return self.inner.has_rows(table, fixed)

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._submit(self.inner.upsert, table, columns, rows)

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._submit(self.inner.insert, table, columns, rows)

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        self._submit(self.inner.delete_in, table, fixed, key, ids)

    def assign(
        self, table: Table, source: str, key: str, column: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        self._submit(self.inner.assign, table, source, key, column, pairs)


@contextmanager
def overlapped(conn: Connection) -> Iterator[Overlapped]:
    """The bulk writer for ``conn`` with writes overlapped; every write is done (or the
    error raised) when the block ends, and no thread uses the connection after it."""
    writer = Overlapped(bulk(conn))
    try:
        yield writer
    finally:
        writer.close()
