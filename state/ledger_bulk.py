"""Bulk writes of the ledger, in flight and failures tables, on the driver's own connection.

The ledger is written twice per pushed batch (before the push and after it) by the
sender thread that also drives the vendor calls, so its cost per row is vendor time
left idle. SQLAlchemy's per-row parameter building cost more than the database's own
work, so these statements go to the DBAPI connection under the caller's transaction,
as SQL text prepared once, with rows as tuples: one statement per table and batch.

Upserts and deletes are staging's (``state.bulk``: SQLite ``executemany`` of a prepared
statement; PostgreSQL ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON
CONFLICT``). ``COPY`` rather than arrays spread by ``unnest`` there, since the ledger's
rows carry their payload JSON: PostgreSQL's ``unnest`` of an array of long texts costs
about fifteen times the ``COPY`` of the same rows. What staging's helpers cannot do
(their key column is ``source``) is here: setting the job people in flight wait for, and
reading rows of one destination by person key.

Every statement reads or writes by primary key. Names come from ``state.schema`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Connection

from state import schema
from state.bulk import PostgresBulk, Row, SqliteBulk

Columns = tuple[str, ...]

_CHUNK = 500  # SQLite parameters per IN (...) list; every SQLite allows 999
_KEYS = ("destination", "person_key")  # the primary key of all three tables

# A person key, the job they now wait for (None: none), and their change to settle it
# with (None: keep the one stored).
JobRow = tuple[str, str | None, str | None]


class LedgerBulk(Protocol):
    def upsert(self, table: Table, columns: Columns, rows: Sequence[Row]) -> None:
        """Writes ``rows`` of ``columns`` (destination and person key first); a row whose
        key is taken has its other columns replaced (of two rows with one key, the last)."""
        ...

    def delete(self, table: Table, destination: str, keys: Sequence[str]) -> None: ...

    def assign_jobs(self, destination: str, rows: Sequence[JobRow]) -> None:
        """Sets the job (and, when given, the change) of these people in flight; rows that
        already wait for that job are not written."""
        ...

    def select(
        self, table: Table, columns: Sequence[str], destination: str, keys: Sequence[str]
    ) -> list[Row]:
        """``columns`` of the rows of ``destination`` whose person key is among ``keys``."""
        ...


def ledger_bulk(conn: Connection) -> LedgerBulk:
    """The bulk writer for ``conn``'s engine, writing inside its current transaction."""
    if conn.dialect.name == "postgresql":
        return PostgresLedger(PostgresBulk(conn))
    return SqliteLedger(SqliteBulk(conn))


def _unique(columns: Columns, rows: Sequence[Row]) -> Sequence[Row]:
    """The last row per key. Row by row (SQLite) the last one wins anyway; on PostgreSQL one
    statement may not update a row twice. A batch holds each person once: this is a guard."""
    if columns[: len(_KEYS)] != _KEYS:
        raise ValueError(f"the key columns {_KEYS} must come first, not {columns}")
    by_key = {(row[0], row[1]): row for row in rows}
    return rows if len(by_key) == len(rows) else list(by_key.values())


class SqliteLedger:
    def __init__(self, bulk: SqliteBulk) -> None:
        self.bulk, self.raw = bulk, bulk.raw

    def upsert(self, table: Table, columns: Columns, rows: Sequence[Row]) -> None:
        self.bulk.upsert(table, columns, _unique(columns, rows))

    def delete(self, table: Table, destination: str, keys: Sequence[str]) -> None:
        self.bulk.delete_in(table, {"destination": destination}, "person_key", keys)

    def assign_jobs(self, destination: str, rows: Sequence[JobRow]) -> None:
        if rows:
            self.raw.executemany(
                f"UPDATE {schema.in_flight.name} SET job = ?1, change = coalesce(?2, change) "
                "WHERE destination = ?3 AND person_key = ?4 AND job IS NOT ?1",
                [(job, change, destination, key) for key, job, change in rows],
            )

    def select(
        self, table: Table, columns: Sequence[str], destination: str, keys: Sequence[str]
    ) -> list[Row]:
        found: list[Row] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"SELECT {', '.join(columns)} FROM {table.name} "
                f"WHERE destination = ? AND person_key IN ({marks})"
            )
            found.extend(self.raw.execute(sql, (destination, *chunk)))
        return found


class PostgresLedger:
    def __init__(self, bulk: PostgresBulk) -> None:
        self.bulk, self.raw = bulk, bulk.raw

    def upsert(self, table: Table, columns: Columns, rows: Sequence[Row]) -> None:
        self.bulk.upsert(table, columns, _unique(columns, rows))

    def delete(self, table: Table, destination: str, keys: Sequence[str]) -> None:
        self.bulk.delete_in(table, {"destination": destination}, "person_key", keys)

    def assign_jobs(self, destination: str, rows: Sequence[JobRow]) -> None:
        if not rows:
            return
        temporary = "crmsync_ledger_jobs"
        with self.raw.cursor() as cursor:
            # the changes are long texts: COPY, not arrays (see the module's note)
            cursor.execute(
                f"CREATE TEMPORARY TABLE {temporary} (k text, job text, change text) ON COMMIT DROP"
            )
            with cursor.copy(f"COPY {temporary} (k, job, change) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            # the key list again as ``= ANY``: an index condition whatever join is picked
            cursor.execute(
                f"UPDATE {schema.in_flight.name} AS f "
                "SET job = p.job, change = coalesce(p.change, f.change) "
                f"FROM {temporary} AS p "
                "WHERE f.destination = %s AND f.person_key = ANY(%s::text[]) "
                "AND f.person_key = p.k AND f.job IS DISTINCT FROM p.job",
                (destination, [key for key, _, _ in rows]),
            )
            cursor.execute(f"DROP TABLE {temporary}")

    def select(
        self, table: Table, columns: Sequence[str], destination: str, keys: Sequence[str]
    ) -> list[Row]:
        if not keys:
            return []
        sql = (
            f"SELECT {', '.join(columns)} FROM {table.name} "
            "WHERE destination = %s AND person_key = ANY(%s::text[])"
        )
        with self.raw.cursor() as cursor:
            cursor.execute(sql, (destination, list(keys)))
            return list(cursor.fetchall())
