"""Bulk writes and look-ups on the driver's own connection, for staging.

Staging writes tens of thousands of rows per transaction; SQLAlchemy's per-row parameter
building cost more than SQLite's own work, so these go to the DBAPI connection under
the caller's transaction, with SQL text prepared once per table:

- SQLite: ``executemany`` of one prepared statement (``sqlite3`` keeps it compiled), and
  key look-ups in chunks of ``IN (?, ...)``;
- PostgreSQL: rows that were not staged ``COPY`` straight into their table, others into a
  temporary table and then one ``INSERT ... SELECT ... ON CONFLICT`` (a round trip per
  chunk rather than per row), look-ups as one seek per id (below), deletes with
  ``= ANY(array)``, and updates joined to ``unnest`` of parameter arrays; a list of ids
  goes as one string that the server splits (``text_array``).

Every statement is a seek on a primary key or an index (``tests/test_stage_plans.py``).
Names come from ``state.schema`` only, never from input.

PostgreSQL plans by the tables' statistics, and a table being loaded has none (a server
with autovacuum off, or not round yet: a first load outruns it). Without them it takes
``source = 'shop'`` to match 1 row in 200 and ``external_id = ANY(20,000 ids)`` to match
them all, so it reads every row of the source through the primary key's first column and
filters the ids: a batch's look-up read the whole table, a load's cost grew with the
square of its size (at 1M customers, 5 s per orders batch in the end). So:

- look-ups join the ids to a seek per id (``LATERAL``, fenced with ``OFFSET 0`` so that
  the planner cannot flatten it into a join it might hash), planned the same whatever
  the statistics say;
- a table that a batch wrote to and that has no statistics gets them in that batch
  (``gather_statistics``): the next batch's deletes and updates, and whatever else plans
  on the table, then see its real shape. Taken once, they stay right as the table grows
  (a unique id's distinct count and a lone source's share are kept as fractions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any, Protocol

from sqlalchemy import BigInteger, Boolean, Integer, String, Table
from sqlalchemy.engine import Connection

from state.dialect import SEPARATOR, joined

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

    def values_where(
        self, table: Table, fixed: dict[str, str], column: str, limit: int
    ) -> list[str]:
        """``column`` of at most ``limit`` rows matching every ``fixed`` column."""
        ...

    def gather_statistics(self, tables: Sequence[Table]) -> None:
        """Has the database gather statistics on those of ``tables`` that have none
        (PostgreSQL; SQLite plans by its indexes alone)."""
        ...

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """Inserts ``rows``; a row whose primary key is taken replaces the other columns."""
        ...

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None: ...

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """``upsert`` of rows whose keys were not staged when they were looked up, by the
        cheapest write that gives the same result (PostgreSQL: ``COPY`` into the table,
        which becomes an upsert if another process staged one of the keys since)."""
        ...

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

    def values_where(
        self, table: Table, fixed: dict[str, str], column: str, limit: int
    ) -> list[str]:
        where = " AND ".join(f"{c} = ?" for c in fixed)
        sql = f"SELECT {column} FROM {table.name} WHERE {where} LIMIT ?"
        return [row[0] for row in self.raw.execute(sql, (*fixed.values(), limit))]

    def gather_statistics(self, tables: Sequence[Table]) -> None:
        pass

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self.upsert(table, columns, rows)  # as cheap as a plain insert on SQLite

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


_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def text_array(ids: Sequence[str]) -> tuple[str, Any]:
    """SQL for a list of ids as a ``text[]``, and its one parameter: the ids joined into
    one string that the server splits (psycopg dumps a list to an array element by
    element in Python, at about 2 us each: seconds a run at a million customers), or the
    list itself when an id is empty or holds the separator."""
    text = joined(ids)
    if text is not None:
        return f"string_to_array(%s, chr({ord(SEPARATOR)}))", text
    return "%s::text[]", list(ids)


@cache
def _binary_types(table: Table, columns: tuple[str, ...]) -> list[str] | None:
    """The PostgreSQL types in which ``COPY`` takes ``columns`` of ``table`` in binary,
    or None to copy them as text: a row in binary costs psycopg about half as much to
    write as in text (a third of a staging's time in the client went to it), but needs
    each value as its column's exact type, which the staging rows give for integers,
    booleans and strings (a customer's birthday comes as ISO text: customers go as
    text)."""
    found: list[str] = []
    for name in columns:
        kind = table.c[name].type
        if isinstance(kind, BigInteger):
            found.append("int8")
        elif isinstance(kind, Integer):
            found.append("int4")
        elif isinstance(kind, Boolean):
            found.append("bool")
        elif isinstance(kind, String):  # Text too; varchar takes text's binary form
            found.append("text")
        else:
            return None
    return found


# those of the named tables (as the search path finds them) without any column statistics
_WITHOUT_STATISTICS = (
    "SELECT c.relname FROM unnest(%s::text[]) AS t(name) "
    "JOIN pg_class AS c ON c.oid = to_regclass(t.name) "
    "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "WHERE NOT EXISTS (SELECT 1 FROM pg_stats AS s "
    "WHERE s.schemaname = n.nspname AND s.tablename = c.relname)"
)


class PostgresBulk:
    def __init__(self, conn: Connection) -> None:
        self.raw: Any = conn.connection.driver_connection
        # the tables this connection found with statistics: they keep them
        self.analyzed: set[str] = conn.connection.info.setdefault("crmsync_analyzed", set())

    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        if not ids:
            return
        listed = ", ".join(columns)
        # one seek per id, whatever the statistics (see the module's docstring)
        array, param = text_array(list(dict.fromkeys(ids)))  # a row once per id asked for
        sql = (
            f"SELECT {', '.join(f'found.{c}' for c in columns)} "
            f"FROM unnest({array}) AS wanted(id) CROSS JOIN LATERAL "
            f"(SELECT {listed} FROM {table.name} WHERE source = %s AND {key} = wanted.id "
            "OFFSET 0) AS found"
        )
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (param, source), binary=_BINARY)
            yield from cursor.fetchall()

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        where = " AND ".join(f"{c} = %s" for c in fixed)
        with self.raw.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table.name} WHERE {where} LIMIT 1", (*fixed.values(),))
            return cursor.fetchone() is not None

    def values_where(
        self, table: Table, fixed: dict[str, str], column: str, limit: int
    ) -> list[str]:
        where = " AND ".join(f"{c} = %s" for c in fixed)
        sql = f"SELECT {column} FROM {table.name} WHERE {where} LIMIT %s"
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (*fixed.values(), limit))
            return [row[0] for row in cursor.fetchall()]

    def gather_statistics(self, tables: Sequence[Table]) -> None:
        names = sorted({t.name for t in tables} - self.analyzed)
        if not names:
            return
        with self.raw.cursor() as cursor:
            cursor.execute(_WITHOUT_STATISTICS, (names,))
            lacking = [name for (name,) in cursor.fetchall()]
            for name in lacking:
                # in the batch's transaction: the rows it wrote are counted, and a batch
                # rolled back takes its statistics with it (so they are checked again)
                cursor.execute(f"ANALYZE {name}")
        self.analyzed.update(set(names) - set(lacking))

    def _copy(
        self, cursor: Any, table: Table, target: str, columns: Sequence[str], rows: Sequence[Row]
    ) -> None:
        """Copies ``rows`` into ``target`` (``table`` or a temporary table like it), in
        binary when every column's type allows (``_binary_types``)."""
        types = _binary_types(table, tuple(columns))
        binary = " (FORMAT BINARY)" if types else ""
        with cursor.copy(f"COPY {target} ({', '.join(columns)}) FROM STDIN{binary}") as copy:
            if types:
                copy.set_types(types)
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
            self._copy(cursor, table, temporary, columns, rows)
            select = f"SELECT {listed} FROM {temporary}"
            cursor.execute(_upsert_sql(table, tuple(columns), select))
            cursor.execute(f"DROP TABLE {temporary}")

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if rows:
            with self.raw.cursor() as cursor:
                self._copy(cursor, table, table.name, columns, rows)

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        """``COPY`` straight into the table: a row written once (not into a temporary
        table and again from there), in pages filled many rows at a time with a WAL
        record per page, not per row. Inside a savepoint: if another process staged one
        of the keys since the look-up, the copy fails whole and the rows are upserted."""
        if not rows:
            return
        with self.raw.cursor() as cursor:
            cursor.execute("SAVEPOINT crmsync_new")
            try:
                self._copy(cursor, table, table.name, columns, rows)
            except Exception as failure:
                if getattr(failure, "sqlstate", None) != _UNIQUE_VIOLATION:
                    raise
                cursor.execute("ROLLBACK TO SAVEPOINT crmsync_new")
                self.upsert(table, columns, rows)
            cursor.execute("RELEASE SAVEPOINT crmsync_new")

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        where = " AND ".join(f"{c} = %s" for c in fixed)
        array, param = text_array(ids)
        sql = f"DELETE FROM {table.name} WHERE {where} AND {key} = ANY({array})"
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (*fixed.values(), param), binary=_BINARY)

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

    def values_where(
        self, table: Table, fixed: dict[str, str], column: str, limit: int
    ) -> list[str]:
        self.flush()
        return self.inner.values_where(table, fixed, column, limit)

    def gather_statistics(self, tables: Sequence[Table]) -> None:
        self.flush()
        self.inner.gather_statistics(tables)

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._submit(self.inner.upsert, table, columns, rows)

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._submit(self.inner.insert, table, columns, rows)

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._submit(self.inner.insert_new, table, columns, rows)

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
