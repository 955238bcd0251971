"""The two places where SQL differs between SQLite and PostgreSQL for crmsync's purposes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
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
