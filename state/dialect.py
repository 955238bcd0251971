"""The two places where SQL differs between SQLite and PostgreSQL for crmsync's purposes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT that takes ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def bytewise(conn: Connection, expr: ColumnElement[Any]) -> ColumnElement[Any]:
    """``expr`` compared byte-wise, as SQLite and Python compare keys (PostgreSQL: "C")."""
    return expr.collate("C") if conn.dialect.name == "postgresql" else expr
