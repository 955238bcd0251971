"""First loads on SQLite without secondary-index upkeep.

Records arrive in the source's order, which is random in the key of every secondary
index of a staging table, so keeping those indexes up as rows arrive costs a random
insert per row and index: at a million customers about 23 us per customer and some
200 MB of dirty index pages per batch, growing with the table. When a stream's table is
empty (a first sync), its secondary indexes are dropped for the stream's load and built
once at its end, each by one sort of the finished table.

What is dropped is exactly what ``state.schema`` declares for the table on SQLite and
is not unique: primary keys and UNIQUE indexes enforce rules, and staging's own
look-ups seek the loaded table's primary key only (versions by external id; a customer's
re-key updates orders and carts through their own indexes, which a customers load leaves
in place), so nothing the load runs is slower for the indexes it lacks
(``tests/test_first_load.py`` checks the plans).

A process killed mid-load leaves the indexes dropped: ``restore_indexes``, run whenever
the store opens, builds whatever the schema declares and the database lacks.

PostgreSQL keeps its indexes: dropping one takes a lock that blocks every reader of the
table, and its staging there has not been measured to need it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import Engine, Index, Table, create_mock_engine, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateIndex, DropIndex

from state import schema

log = logging.getLogger("crmsync.state")

_INDEX_NAMES = "SELECT name FROM sqlite_master WHERE type = 'index'"


@cache
def _sqlite_indexes() -> tuple[Index, ...]:
    """The indexes ``state.schema`` creates on SQLite, as SQLAlchemy's own DDL generator
    decides (so an index declared for another dialect only, ``ddl_if``, is not one)."""
    created: list[Index] = []

    def note(statement: Any, *_: Any, **__: Any) -> None:
        if isinstance(statement, CreateIndex):
            created.append(statement.element)

    schema.metadata.create_all(create_mock_engine("sqlite://", note), checkfirst=False)
    return tuple(created)


def _present(conn: Connection) -> set[str]:
    return set(conn.execute(text(_INDEX_NAMES)).scalars())


def _create_missing(conn: Connection, wanted: Iterable[Index]) -> list[str]:
    """Creates the indexes of ``wanted`` that the database lacks; returns their names."""
    present = _present(conn)
    created: list[str] = []
    for index in wanted:
        if index.name not in present:
            # IF NOT EXISTS: another process may have built it since ``present`` was read
            conn.execute(CreateIndex(index, if_not_exists=True))
            created.append(str(index.name))
    return created


def _drop_for_first_load(engine: Engine, table: Table) -> tuple[Index, ...]:
    """Drops ``table``'s non-unique secondary indexes if it is empty, on SQLite; returns
    the indexes to build at the end of the load (none: the table keeps its indexes)."""
    if engine.dialect.name != "sqlite":
        return ()
    deferred = tuple(i for i in _sqlite_indexes() if i.table is table and not i.unique)
    if not deferred:
        return ()
    with engine.begin() as conn:
        if conn.execute(select(text("1")).select_from(table).limit(1)).first() is not None:
            return ()  # not a first load: the indexes serve what reads the staged rows
        present = _present(conn)
        for index in deferred:
            if index.name in present:
                conn.execute(DropIndex(index, if_exists=True))
    return deferred


@contextmanager
def deferred_indexes(engine: Engine, table: Table) -> Iterator[None]:
    """Runs a load into ``table`` (every batch of one stream, each committed on its own)
    without the table's non-unique secondary indexes when the table is empty, on SQLite,
    and builds them when the block ends, however it ends. Elsewhere, or when ``table``
    has any row, the block runs with the indexes as they are.

    A crash inside the block leaves the indexes dropped, for ``restore_indexes``.
    """
    deferred = _drop_for_first_load(engine, table)
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
                "could not rebuild the indexes of %s after a failed load (%s); the next "
                "opening of the store builds them",
                table.name,
                failure,
            )
        raise
    with engine.begin() as conn:
        _create_missing(conn, deferred)


def restore_indexes(engine: Engine) -> list[str]:
    """Builds every index the schema declares that the database lacks (a load killed
    while it had them dropped); returns their names. One query when none is missing.

    Only SQLite stores ever drop them (``deferred_indexes``), so PostgreSQL is not asked.
    """
    if engine.dialect.name != "sqlite":
        return []
    with engine.begin() as conn:
        created = _create_missing(conn, _sqlite_indexes())
    if created:
        log.warning(
            "rebuilt the state database's indexes %s (a first load did not finish)",
            ", ".join(created),
        )
    return created
