"""The SQL source (``kind = "sql"``): a platform's own database read through SQLAlchemy,
in keyset pages, mapped with the shared record-mapping language (docs/sql-source.md)."""

from __future__ import annotations

from connectors.sql.config import SqlConfig
from connectors.sql.source import SqlSource

__all__ = ["SqlConfig", "SqlSource"]
