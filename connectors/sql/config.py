"""The SQL source's configuration: a database URL and, per stream, where its rows are.

A stream is a ``table`` or a ``query`` (a SELECT) with two columns named: ``key``, unique
per record, and ``updated_at``, the record's last change, which together order the keyset
pages (see ``keyset``). An order's lines (a cart's items) come from a second table or
query joined by the record's key, read one page of records at a time, or from a JSON
column (``path``). Fields are mapped in the shared record-mapping language
(``connectors.records``); ``external_id`` and ``updated_at`` default to the key and
update-time columns. Every key is described in ``docs/sql-source.md``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.records import FieldSpec, MappingContext, MappingKeys, RowsSpec, mapping_issues
from crmsync.config import RegionCode
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigIssue
from crmsync.normalize import ZoneName
from crmsync.records import Stream

UpdatedAtType = Literal["timestamp", "timestamptz", "epoch", "epoch_ms"]
StreamName = Literal["customers", "orders", "carts"]
ROWS = {Stream.ORDERS: "lines", Stream.CARTS: "items"}  # each stream's key for its rows
ATTACHED = {"lines": "@lines", "items": "@items"}  # where rows read from a table are put
_EPOCH_FORMATS = {"epoch": "epoch", "epoch_ms": "epoch_ms"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_query(query: str | None) -> None:
    if query is None:
        return
    if not query.lstrip().lower().startswith(("select", "with", "(")):
        raise ValueError("'query' must be a SELECT (or WITH ... SELECT)")
    if query.rstrip().endswith(";"):
        raise ValueError("'query' must not end with ';'")


class RowsConfig(_Strict):
    """An order's lines or a cart's items: a table or query joined by ``key``, or ``path``."""

    table: str | None = Field(
        default=None,
        description="The lines' table or view, optionally schema-qualified ('magaza.kalemler').",
    )
    query: str | None = Field(
        default=None, description="A SELECT giving the lines, read as if it were a table."
    )
    path: str | None = Field(
        default=None,
        description="Instead of table/query: the column (JSON) or path in the record's row "
        "that holds the list of lines.",
    )
    key: str | None = Field(
        default=None,
        description="With table/query: the column holding the parent record's key (order_id).",
    )
    order_by: list[str] = Field(
        default_factory=list,
        description="With table/query: columns that order one record's lines, e.g. ['line_no'] "
        "(without them the database's order is used, which may differ between reads).",
    )
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Line field -> path or field spec in the record-mapping language.",
    )

    @model_validator(mode="after")
    def _one_origin(self) -> RowsConfig:
        origins = [name for name in ("table", "query", "path") if getattr(self, name) is not None]
        if len(origins) != 1:
            raise ValueError("give exactly one of 'table', 'query' and 'path'")
        _checked_query(self.query)
        if self.path is None and self.key is None:
            raise ValueError(
                "'key' (the column with the parent's key) is required with table/query"
            )
        if self.path is not None and (self.key is not None or self.order_by):
            raise ValueError("'key' and 'order_by' apply to table/query lines, not to 'path'")
        return self

    @property
    def joined(self) -> bool:
        """Read from a table or query of their own (not from a path in the record's row)."""
        return self.path is None


class SqlStream(_Strict):
    """One stream (customers, orders or carts) read from the platform's database."""

    enabled: bool = Field(default=True, description="Set false to keep the block but not read it.")
    table: str | None = Field(
        default=None,
        description="A table or view to read, optionally schema-qualified: 'magaza.siparisler'.",
    )
    query: str | None = Field(
        default=None,
        description="A SELECT read as if it were a table (no ORDER BY, LIMIT or trailing ';': "
        "crmsync pages it itself).",
    )
    key: str = Field(description="The column that identifies a record (unique, never NULL).")
    updated_at: str = Field(description="The column holding each record's last change.")
    updated_at_type: UpdatedAtType = Field(
        default="timestamp",
        description="How updated_at is stored: 'timestamp' (naive, in the source's timezone), "
        "'timestamptz' (with a zone), 'epoch' (integer seconds) or 'epoch_ms' (milliseconds).",
    )
    json_columns: list[str] = Field(
        default_factory=list,
        description="Columns holding JSON text, decoded before mapping so paths reach into "
        "them (PostgreSQL json/jsonb arrive decoded; a lines 'path' column is decoded anyway).",
    )
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Canonical field -> column or field spec in the record-mapping language; "
        "external_id and updated_at default to the key and updated_at columns.",
    )
    lines: RowsConfig | None = Field(default=None, description="Orders only: the order lines.")
    items: RowsConfig | None = Field(default=None, description="Carts only: the cart items.")

    @model_validator(mode="after")
    def _one_origin(self) -> SqlStream:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' and 'query'")
        _checked_query(self.query)
        return self

    def rows_config(self, stream: Stream) -> RowsConfig | None:
        return (
            self.lines
            if stream is Stream.ORDERS
            else self.items
            if stream is Stream.CARTS
            else None
        )

    def mapping(self) -> dict[str, FieldSpec]:
        """The field specs with the defaults filled in: the key as external_id, the update
        column (with its epoch format) as updated_at."""
        fields = dict(self.fields)
        fields.setdefault("external_id", FieldSpec(path=self.key))
        given = fields.get("updated_at")
        epoch = _EPOCH_FORMATS.get(self.updated_at_type)
        if given is None:
            fields["updated_at"] = FieldSpec(path=self.updated_at, format=epoch)
        elif epoch is not None and given.format is None:
            fields["updated_at"] = given.model_copy(update={"format": epoch})
        return fields

    def rows_spec(self, stream: Stream) -> RowsSpec | None:
        rows = self.rows_config(stream)
        if rows is None:
            return None
        path = rows.path if rows.path is not None else ATTACHED[ROWS[stream]]
        return RowsSpec(path=path, fields=rows.fields)

    def issues(self, stream: Stream, key: str) -> list[ConfigIssue]:
        """What is wrong with this stream's mapping, under ``key`` (the stream's TOML key)."""
        found: list[ConfigIssue] = []
        given = self.fields.get("updated_at")
        if given is not None and given.paths() != [self.updated_at]:
            found.append(
                ConfigIssue(
                    f"{key}.fields.updated_at",
                    f"must read the updated_at column {self.updated_at!r}: the pages are "
                    "ordered by it and the cursor is its value",
                    "leave fields.updated_at out, or set only its timezone",
                )
            )
        if given is not None and given.format not in (
            None,
            _EPOCH_FORMATS.get(self.updated_at_type),
        ):
            found.append(
                ConfigIssue(
                    f"{key}.fields.updated_at.format",
                    "the update-time column is a timestamp or an epoch number, never text",
                    "set updated_at_type instead",
                )
            )
        if self.updated_at_type != "timestamp" and given is not None and given.timezone:
            found.append(
                ConfigIssue(
                    f"{key}.fields.updated_at.timezone", "only naive timestamps take a zone"
                )
            )
        for name, other in (("lines", Stream.ORDERS), ("items", Stream.CARTS)):
            if getattr(self, name) is not None and stream is not other:
                found.append(ConfigIssue(f"{key}.{name}", f"not used by the {stream} stream"))
        if found:
            return found
        rows = ROWS.get(stream, "lines")
        return mapping_issues(
            stream,
            self.mapping(),
            self.rows_spec(stream),
            keys=MappingKeys.nested(key, rows=rows),
            context=MappingContext(),
            require=("updated_at",),
        )


class SqlConfig(ConnectorConfig):
    """``kind = "sql"``: the platform's own database, read-only, through SQLAlchemy."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["sql"] = Field(description="Always 'sql'.")
    url: SecretStr = Field(
        description="SQLAlchemy URL of the platform's database, e.g. "
        "'postgresql+psycopg://reader:${SHOP_DB_PASSWORD}@db:5432/shop'; held as a secret, "
        "since it may carry a password."
    )
    schema_name: str | None = Field(
        default=None,
        alias="schema",
        description="Schema of unqualified table names (PostgreSQL; default: the search path).",
    )
    timezone: ZoneName | None = Field(
        default=None,
        description="Zone of naive timestamps in the database (default: defaults.timezone).",
    )
    phone_region: RegionCode | None = Field(
        default=None, description="Region for phone numbers without a country code."
    )
    page_size: int = Field(
        default=5000, ge=1, le=100_000, description="Rows per keyset page (one query each)."
    )
    connect_timeout: int = Field(
        default=10, ge=1, description="Seconds to wait for a connection (PostgreSQL, MySQL)."
    )
    streams: dict[StreamName, SqlStream] = Field(
        default_factory=dict, description="What to read, by stream name."
    )

    @field_validator("url")
    @classmethod
    def _parsable(cls, value: SecretStr) -> SecretStr:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError("not a SQLAlchemy URL (dialect+driver://user:pass@host/db)") from None
        return value

    @model_validator(mode="after")
    def _mappings_compile(self) -> SqlConfig:
        if not self.enabled_streams():
            raise ValueError("no enabled stream: configure streams.customers, orders or carts")
        issues = [
            issue
            for name, stream in self.enabled_streams().items()
            for issue in stream.issues(name, f"streams.{name}")
        ]
        if issues:
            raise ValueError("; ".join(str(issue) for issue in issues))
        return self

    def enabled_streams(self) -> dict[Stream, SqlStream]:
        """The enabled streams, in pull order (customers before what refers to them)."""
        order = (Stream.CUSTOMERS, Stream.ORDERS, Stream.CARTS)
        return {
            stream: self.streams[stream.value]
            for stream in order
            if stream.value in self.streams and self.streams[stream.value].enabled
        }
