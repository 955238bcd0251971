"""The places where SQL differs between SQLite and PostgreSQL for crmsync's purposes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, Text, any_, bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT that takes ``on_conflict_do_update`` / ``on_conflict_do_nothing``.

    Each dialect's module is imported here, by the engine that uses it: importing
    PostgreSQL's at start-up would cost every SQLite run about 30 ms, and the other way
    round.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def bytewise(conn: Connection, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    """``expr`` compared byte-wise, as SQLite and Python compare keys (PostgreSQL: "C")."""
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr


SEPARATOR = "\x1f"  # ASCII's unit separator, between the keys of a list sent as one string


def joined(keys: Sequence[str]) -> str | None:
    """``keys`` as one string for PostgreSQL to split at ``SEPARATOR`` (psycopg dumps a
    list to an array element by element in Python, at about 2 us each), or None when a
    key is empty or holds the separator."""
    text = SEPARATOR.join(keys)
    if text.count(SEPARATOR) == len(keys) - 1 and all(keys):
        return text
    return None


def key_list(conn: Connection, keys: Sequence[str]) -> Any:
    """The value of a parameter that ``one_of`` compares with: the keys as they are
    (SQLite), or as one string when they can be joined (PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return list(keys)
    text = joined(keys)
    return list(keys) if text is None else text


def one_of(
    conn: Connection, column: ColumnElement[Any], name: str, value: Any
) -> ColumnElement[bool]:
    """``column IN (keys)``, the keys bound at execution as the parameter ``name`` whose
    value is ``key_list(conn, keys)``.

    SQLite: a list of placeholders (expanding). PostgreSQL: ``= ANY`` of one array, so
    the statement's text is the same for every list: an expanding list's placeholders
    are rendered one by one by SQLAlchemy, and its text parsed anew by psycopg, at about
    3 us a key on the client (a second for every 150,000 keys looked up).

    On PostgreSQL the array is built in a sub-select, so the planner does not count its
    keys: seeing a thousand of them, it costed a thousand index probes above a scan of
    the whole table, and scanned 100,000 customers for each chunk of a consent read-back
    (20 ms where the probes take 2). A list is always a chunk of keys to seek by an index
    (``tests/test_opted_out.py`` checks the plan).
    """
    if conn.dialect.name != "postgresql":
        return column.in_(bindparam(name, expanding=True))
    from sqlalchemy.dialects.postgresql import ARRAY

    array: ColumnElement[Any]
    if isinstance(value, str):
        array = func.string_to_array(bindparam(name, type_=Text()), func.chr(ord(SEPARATOR)))
    else:
        array = bindparam(name, type_=ARRAY(Text()))
    unseen = func.array(select(func.unnest(array)).scalar_subquery())
    return column == any_(unseen)
