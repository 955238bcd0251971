"""First loads without secondary-index upkeep, on SQLite and PostgreSQL.

Records arrive in the source's order, which is random in the key of every secondary
index of a staging table, so keeping those indexes up as rows arrive costs a random
insert per row and index, growing with the table: on SQLite at a million customers about
23 us per customer and some 200 MB of dirty index pages per batch; on PostgreSQL the
staging rate fell from 24.8k records/s at 100k customers to 13.7k at 1M. When a stream's
table is empty (a first sync), its secondary indexes are dropped for the stream's load
and built once at its end, each by one sort of the finished table.

What is dropped is exactly what ``state.schema`` declares for the table on the store's
engine and is not unique: primary keys and UNIQUE indexes enforce rules, and staging's
own look-ups seek the loaded table's primary key only (versions by external id; a
customer's re-key updates orders and carts through their own indexes, which a customers
load leaves in place), so nothing the load runs is slower for the indexes it lacks
(``tests/test_first_load.py`` checks the plans on both engines).

A process killed mid-load leaves the indexes dropped: ``restore_indexes``, run whenever
the store opens, builds whatever the schema declares and the database lacks.

On PostgreSQL, which serves several processes at once:

- Locks. ``DROP INDEX`` takes the table's ACCESS EXCLUSIVE lock, which waits for every
  transaction that has read the table and makes every later reader wait behind it. The
  table is empty, so the drop itself is instant, but a long transaction elsewhere could
  hold it up: the drop waits at most ``LOCK_WAIT`` and, if that passes, the load keeps
  the indexes (a load into a table with rows asks for no lock). ``CREATE INDEX`` at the
  end takes a SHARE lock: readers go on, writers to that table (none but this load,
  whose batches are done) wait while the indexes build (3-4.5 s for the three tables of
  a 100k-customer store on this 2-core machine). ``CREATE INDEX CONCURRENTLY`` would not
  block them but scans the table twice, cannot run in a transaction and leaves an
  invalid index behind a failure, for writers that a first load does not have.
- Who builds. A load holds a session advisory lock on its table (``_load_lock``) for as
  long as it runs. A second process loading the same table at the same time keeps the
  indexes as they are (the first builds them), and ``restore_indexes`` in another process
  leaves a table alone while its load runs (it would build the indexes half-way through
  the load and leave the rest of it to keep them up row by row). A killed process's
  session ends with it, and so does its lock.
- Statistics. A table loaded into while empty has no column statistics (autovacuum may
  be off or not yet round; ``CREATE INDEX`` sets its row count only), and PostgreSQL then
  guesses that a batch's 20,000 ids match the whole table and reads every row of the
  source for them: a bitmap scan of the primary key on ``source`` alone, at 1M customers
  3-5 s per orders batch in the end, where seeking each id takes 40-90 ms. Staging's
  look-ups therefore seek per id whatever the statistics, and the first batch written
  to a table without statistics gathers them (``state.bulk``); what plans on the tables
  after a pull runs after ``Store.refresh_statistics``, which the pipeline calls once
  its pull is done.
- Sort memory. The builds run with the server's ``maintenance_work_mem`` (64 MB by
  default) and its parallel workers. More memory did not build faster: 5M rows shaped
  as a 1M-customer store's orders, by person key 6.1-10.4 s with 64 MB against 8.8-10.9 s
  with 256 MB (by staged_at 2.1-2.5 against 2.4-3.7 s), the sort spilling to files the
  page cache keeps either way.

On SQLite the builds run in the run's process, and the last table's run alone, after
every reader has ended: SQLite sorts on one thread unless told otherwise. So a build
sorts on as many threads as the process has CPUs (``PRAGMA threads``), in small chunks
(``BUILD_CACHE_KIB`` of page cache, each thread sorting that much at a time in memory),
and the connection's own settings come back after it. The three orders indexes of 5M
rows shaped as a 1M-customer store's, on 2 cores: 10.1-10.4 s and 33 MB at its peak,
against 16.9-17.3 s and 83 MB with one thread and the store's 32 MB cache (two threads
with that cache: 11.8-12.4 s and 149 MB; one thread with 8 MB: 14.3-14.9 s).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, Index, Table, create_mock_engine, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateIndex, DropIndex

from crmsync.cpus import usable_cpus
from state import schema

log = logging.getLogger("crmsync.state")

# a mock engine's URL per dialect that defers indexes
_DIALECTS = {"sqlite": "sqlite://", "postgresql": "postgresql+psycopg://"}
_INDEX_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index'",
    "postgresql": "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()",
}
# PostgreSQL: how long the drop waits for transactions that read the table, every later
# reader of the table waiting behind it meanwhile
LOCK_WAIT = "2s"
# PostgreSQL: how long ``restore_indexes`` waits for a table's load lock: a killed
# process's server session ends an instant after it (the lock with it), a running load
# holds it for minutes
RESTORE_WAIT = "1s"
# first half of the advisory lock key of a table's load ("crms"), its oid the second
_LOCK_CLASS = 0x63726D73
_LOAD_LOCK = "SELECT pg_try_advisory_lock(:tag, CAST(CAST(:name AS regclass) AS oid)::int)"
_LOAD_UNLOCK = "SELECT pg_advisory_unlock(:tag, CAST(CAST(:name AS regclass) AS oid)::int)"
_RESTORE_LOCK = "SELECT pg_advisory_xact_lock(:tag, CAST(CAST(:name AS regclass) AS oid)::int)"
_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for lock_timeout
# SQLite: the page cache of a connection while it builds indexes, in KiB (its sorter's
# memory per thread; the store's connections keep 32 MB otherwise)
BUILD_CACHE_KIB = 4096


@cache
def declared_indexes(dialect: str) -> tuple[Index, ...]:
    """The indexes ``state.schema`` creates on ``dialect``, as SQLAlchemy's own DDL
    generator decides (so an index declared for another dialect only, ``ddl_if``, is not
    one)."""
    created: list[Index] = []

    def note(statement: Any, *_: Any, **__: Any) -> None:
        if isinstance(statement, CreateIndex):
            created.append(statement.element)

    schema.metadata.create_all(create_mock_engine(_DIALECTS[dialect], note), checkfirst=False)
    return tuple(created)


def _present(conn: Connection) -> set[str]:
    """The names of the indexes the database has (PostgreSQL: in the store's schema)."""
    return set(conn.execute(text(_INDEX_NAMES[conn.dialect.name])).scalars())


def _create_missing(conn: Connection, wanted: Iterable[Index]) -> list[str]:
    """Creates the indexes of ``wanted`` that the database lacks; returns their names."""
    present = _present(conn)
    missing = [index for index in wanted if index.name not in present]
    if not missing:
        return []
    with _sorting_in_parallel(conn):
        for index in missing:
            # IF NOT EXISTS: another process may have built it since ``present`` was read
            conn.execute(CreateIndex(index, if_not_exists=True))
    return [str(index.name) for index in missing]


@contextmanager
def _sorting_in_parallel(conn: Connection) -> Iterator[None]:
    """On SQLite, the block's sorts run on a thread per CPU with ``BUILD_CACHE_KIB`` of
    cache; the connection's own settings are back when it ends. Elsewhere, nothing."""
    if conn.dialect.name != "sqlite":
        yield
        return
    threads = conn.exec_driver_sql("PRAGMA threads").scalar_one()
    cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA threads = {usable_cpus()}")
    conn.exec_driver_sql(f"PRAGMA cache_size = -{BUILD_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA threads = {int(threads)}")
        conn.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")


def _empty(conn: Connection, table: Table) -> bool:
    return conn.execute(select(text("1")).select_from(table).limit(1)).first() is None


def _lock_timed_out(failure: OperationalError) -> bool:
    return getattr(failure.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


def _drop_for_first_load(engine: Engine, table: Table) -> tuple[Index, ...]:
    """Drops ``table``'s non-unique secondary indexes if it is empty; returns the indexes
    to build at the end of the load (none: the table keeps its indexes)."""
    dialect = engine.dialect.name
    if dialect not in _DIALECTS:
        return ()
    deferred = tuple(i for i in declared_indexes(dialect) if i.table is table and not i.unique)
    if not deferred:
        return ()
    try:
        with engine.begin() as conn:
            if not _empty(conn, table):
                return ()  # not a first load: the indexes serve what reads the staged rows
            if dialect == "postgresql":
                # the drop's lock, taken before it so that no row arrives between the
                # check and the drop, and given up after LOCK_WAIT (see the module's
                # docstring); only for an empty table, as a run that loads into one with
                # rows makes no reader wait
                conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
                conn.execute(text(f"LOCK TABLE {table.name} IN ACCESS EXCLUSIVE MODE"))
                if not _empty(conn, table):  # rows committed before the lock was granted
                    return ()
            present = _present(conn)
            for index in deferred:
                if index.name in present:
                    conn.execute(DropIndex(index, if_exists=True))
    except OperationalError as failure:
        if not _lock_timed_out(failure):
            raise
        log.info(
            "%s is in use by another transaction: its first load keeps its indexes up",
            table.name,
        )
        return ()
    return deferred


@contextmanager
def _load_lock(engine: Engine, table: Table) -> Iterator[bool]:
    """Yields whether this process may drop and build ``table``'s indexes for a load:
    always on SQLite (one writer at a time); on PostgreSQL if no other session holds the
    table's load lock, which this one then holds until the block ends."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = {"tag": _LOCK_CLASS, "name": table.name}
    # its own session, outside every transaction, for as long as the load lasts
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text(_LOAD_LOCK), key).scalar():
            yield False
            return
        try:
            yield True
        finally:
            # the connection goes back to the pool with its session: unlock it there, or
            # end the session if that fails (the load's own error, if any, goes on)
            try:
                conn.execute(text(_LOAD_UNLOCK), key)
            except Exception:
                conn.invalidate()


@contextmanager
def deferred_indexes(engine: Engine, table: Table) -> Iterator[None]:
    """Runs a load into ``table`` (every batch of one stream, each committed on its own)
    without the table's non-unique secondary indexes when the table is empty, and builds
    them when the block ends, however it ends. When ``table`` has any row, or (on
    PostgreSQL) another process is loading it or a transaction holds it past
    ``LOCK_WAIT``, the block runs with the indexes as they are.

    A crash inside the block leaves the indexes dropped, for ``restore_indexes``.
    """
    with _load_lock(engine, table) as ours:
        deferred = _drop_for_first_load(engine, table) if ours else ()
        if not deferred:
            yield
            return
        try:
            yield
        except BaseException:
            try:
                with engine.begin() as conn:
                    _create_missing(conn, deferred)
            except Exception as failure:  # the load's own error matters more: raise that one
                log.warning(
                    "could not rebuild the indexes of %s after a failed load (%s); the "
                    "next opening of the store builds them",
                    table.name,
                    failure,
                )
            raise
        with engine.begin() as conn:
            _create_missing(conn, deferred)


def _restore_postgres(engine: Engine, missing: list[Index]) -> list[str]:
    """Builds ``missing`` table by table, each once no load of the table runs: a table
    whose load lock stays taken past ``RESTORE_WAIT`` is being loaded by another
    process, which builds them at its end."""
    by_table: dict[Table, list[Index]] = {}
    for index in missing:
        assert isinstance(index.table, Table)
        by_table.setdefault(index.table, []).append(index)
    created: list[str] = []
    for table, wanted in by_table.items():
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{RESTORE_WAIT}'"))
                conn.execute(text(_RESTORE_LOCK), {"tag": _LOCK_CLASS, "name": table.name})
                conn.execute(text("SET LOCAL lock_timeout = 0"))  # the build waits as usual
                created += _create_missing(conn, wanted)
        except OperationalError as failure:
            if not _lock_timed_out(failure):
                raise
            log.info("%s is being loaded by another process, which builds its indexes", table.name)
    return created


def restore_indexes(engine: Engine) -> list[str]:
    """Builds every index the schema declares that the database lacks (a load killed
    while it had them dropped); returns their names. One query when none is missing."""
    dialect = engine.dialect.name
    if dialect not in _DIALECTS:
        return []
    if dialect == "sqlite":
        with engine.begin() as conn:
            created = _create_missing(conn, declared_indexes(dialect))
    else:
        with engine.connect() as conn:
            present = _present(conn)
        missing = [i for i in declared_indexes(dialect) if i.name not in present]
        created = _restore_postgres(engine, missing) if missing else []
    if created:
        log.warning(
            "rebuilt the state database's indexes %s (a first load did not finish)",
            ", ".join(created),
        )
    return created
