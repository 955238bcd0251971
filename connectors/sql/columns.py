"""Which columns a stream's mapping reads, whether the database has them, and whether the
update-time column holds what ``updated_at_type`` says.

The columns of a table or query are found by running it with ``LIMIT 0`` (no rows are
read; every database reports a result's columns). A path's column is the path itself
when a column is named so (``"adres.il"`` may be a column), else its first step
(``adres`` in ``adres.il``, a JSON column). Reads then select only the columns the
mapping needs, and ``check`` names each field whose column is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from connectors.records import FieldSpec
from connectors.sql.config import RowsConfig, SqlStream
from connectors.sql.keyset import read_only, source_rows
from crmsync.errors import ConfigIssue

_STEP_END = re.compile(r"[.\[]")


def columns_of(
    engine: Engine, table: str | None, query: str | None, schema: str | None
) -> list[str]:
    """The result columns of a table or query, read with ``LIMIT 0``."""
    src = source_rows(table, query, [], schema)
    with read_only(engine) as conn:
        statement: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(src).limit(0)
        return list(conn.execute(statement).keys())


def column_of(path: str, available: Iterable[str]) -> str:
    """The column a path starts in."""
    return path if path in available else _STEP_END.split(path, maxsplit=1)[0]


@dataclass(frozen=True)
class Needed:
    """The columns a read selects, and the mapping's references to columns that are absent."""

    columns: tuple[str, ...]
    missing: tuple[ConfigIssue, ...]


def needed(
    fields: Mapping[str, FieldSpec],
    fixed: Sequence[tuple[str, str]],
    available: Sequence[str],
    key: str,
    origin: str,
) -> Needed:
    """Columns for ``fields`` plus ``fixed`` (column, its TOML key) pairs, all checked
    against ``available``; issues are keyed ``<key>.<field>``."""
    present = set(available)
    wanted: dict[str, None] = {}
    missing: list[ConfigIssue] = []
    shown = ", ".join(available[:40]) + (", ..." if len(available) > 40 else "")

    def want(column: str, where: str) -> None:
        if column in present:
            wanted[column] = None
        else:
            missing.append(
                ConfigIssue(where, f"no column {column!r} in {origin}", f"its columns: {shown}")
            )

    for column, where in fixed:
        want(column, where)
    for name, spec in fields.items():
        for path in spec.referenced():
            want(column_of(path, present), f"{key}.{name}")
    return Needed(tuple(wanted), tuple(missing))


def origin(config: SqlStream | RowsConfig) -> str:
    return f"table {config.table}" if config.table is not None else "the configured query"


def type_problem(config: SqlStream, value: Any) -> str:
    """Why a sample update time does not fit ``updated_at_type`` ('' when it does)."""
    kind = config.updated_at_type
    if value is None:
        return ""
    if isinstance(value, datetime):
        if kind in ("epoch", "epoch_ms"):
            return f"'{kind}' given, but {config.updated_at!r} holds date/times: use 'timestamp'"
        aware = value.tzinfo is not None
        if kind == "timestamp" and aware:
            return f"{config.updated_at!r} holds times with a zone: use 'timestamptz'"
        if kind == "timestamptz" and not aware:
            return f"{config.updated_at!r} holds naive times: use 'timestamp' (and timezone)"
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        if kind not in ("epoch", "epoch_ms"):
            return f"{config.updated_at!r} holds numbers: use 'epoch' or 'epoch_ms'"
        if kind == "epoch" and value > 10**11:
            return f"{config.updated_at!r} looks like milliseconds ({value}): use 'epoch_ms'"
        if kind == "epoch_ms" and value < 10**11:
            return f"{config.updated_at!r} looks like seconds ({value}): use 'epoch'"
        return ""
    if isinstance(value, str):  # SQLite keeps date/times as text
        if kind != "timestamp":
            return f"{config.updated_at!r} holds date/times as text: use 'timestamp'"
        return ""
    return f"{config.updated_at!r} holds {type(value).__name__} values, not times"
