"""``SqlSource``: customers, orders and carts read from the platform's own database.

Each stream is read in keyset pages ordered by (updated_at, key) (see ``keyset``); an
order's lines (a cart's items) held in a table of their own are joined to each page of
orders in the page's one statement and handed to the mapping as the order's rows. Every row goes
through the shared record-mapping language (``connectors.records``), so a bad row becomes
a quarantined ``RecordIssue`` and the read goes on. The database is only read: each page
is one short read-only transaction, so a pull holds no lock or snapshot between pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Engine, make_url

from connectors.records import Builder, MappingContext, MappingKeys, compile_stream
from connectors.sql.columns import Needed, column_of, columns_of, needed, origin, type_problem
from connectors.sql.config import ATTACHED, ROWS, RowsConfig, SqlConfig, SqlStream
from connectors.sql.errors import translated
from connectors.sql.keyset import Children, KeysetPages, Row
from crmsync import normalize
from crmsync.contract import Check, ConnectorContext
from crmsync.errors import (
    AuthError,
    ConfigError,
    ConfigIssue,
    ConnectorError,
    RecordError,
)
from crmsync.records import IssueAction, Record, RecordIssue, Stream

BetweenPages = Callable[[Stream, int], None]


@dataclass(frozen=True)
class Plan:
    """One stream's statements and row handling, built once its columns are known."""

    pages: KeysetPages
    json_columns: tuple[str, ...]  # decoded before mapping


class SqlSource:
    kind: ClassVar[str] = "sql"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "sql.toml"
    config_model: ClassVar[type[SqlConfig]] = SqlConfig

    def __init__(
        self,
        config: SqlConfig | Mapping[str, Any],
        context: ConnectorContext,
        *,
        engine: Engine | None = None,
        between_pages: BetweenPages | None = None,
    ) -> None:
        self.context = context
        self.key = f"sources.{context.name}"
        self.config = self._validated(config)
        try:
            self.zone = normalize.timezone(self.config.timezone or context.timezone)
        except RecordError as exc:
            raise ConfigError(exc.reason, key=f"{self.key}.timezone") from exc
        self._mapping_context = MappingContext(
            tz=self.zone, region=self.config.phone_region or context.default_region
        )
        self._streams = self.config.enabled_streams()
        self._builders = self._compile()
        self._engine = engine
        self._owns_engine = engine is None
        self._between = between_pages
        self._plans: dict[Stream, Plan] = {}

    def _validated(self, config: SqlConfig | Mapping[str, Any]) -> SqlConfig:
        if isinstance(config, SqlConfig):
            return config
        try:
            return SqlConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise ConfigError(
                [
                    ConfigIssue(".".join([self.key, *map(str, error["loc"])]), error["msg"])
                    for error in exc.errors()
                ]
            ) from exc

    def _compile(self) -> dict[Stream, Builder]:
        builders: dict[Stream, Builder] = {}
        issues: list[ConfigIssue] = []
        for stream, config in self._streams.items():
            stream_key = self._stream_key(stream)
            try:
                builders[stream] = compile_stream(
                    stream,
                    config.mapping(),
                    config.rows_spec(stream),
                    keys=MappingKeys.nested(stream_key, rows=ROWS.get(stream, "lines")),
                    context=self._mapping_context,
                    require=("updated_at",),
                )
            except ConfigError as exc:
                issues.extend(exc.issues)
        if issues:
            raise ConfigError(issues)
        return builders

    # --- the Source protocol ----------------------------------------------------------

    def streams(self) -> Sequence[Stream]:
        return list(self._streams)

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        """Records of ``stream`` changed in (since, until], oldest change first."""
        if stream not in self._streams:
            return
        builder = self._builders[stream]
        for page in self.raw_pages(stream, since, until):
            for row in page:
                if isinstance(row, RecordIssue):
                    yield row
                else:
                    yield from builder.outcome(row, since, until)

    def raw_pages(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[list[Row | RecordIssue]]:
        """The rows of each page before mapping, children attached and JSON decoded (a row
        whose JSON cannot be decoded is an issue instead): for diagnostics and the bench."""
        plan = self.plan(stream)
        between = self._between
        hook = (lambda number: between(stream, number)) if between is not None else None
        with self._translated(stream):
            for page in plan.pages.pages(since, until, between=hook):
                yield self._prepared(stream, plan, page)

    def builder(self, stream: Stream) -> Builder:
        """The compiled mapping of ``stream`` (pure: raw row -> canonical record)."""
        return self._builders[stream]

    def check(self) -> list[Check]:
        return [self._check_stream(stream) for stream in self._streams]

    def close(self) -> None:
        if self._engine is not None and self._owns_engine:
            self._engine.dispose()
            self._engine = None
        self._plans.clear()

    # --- reading ----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = make_url(self.config.url.get_secret_value())
            connect_args: dict[str, Any] = {}
            if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
                connect_args["connect_timeout"] = self.config.connect_timeout
            self._engine = sa.create_engine(
                url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
            )
        return self._engine

    def _stream_key(self, stream: Stream) -> str:
        return f"{self.key}.streams.{stream}"

    def _prepared(self, stream: Stream, plan: Plan, page: list[Row]) -> list[Row | RecordIssue]:
        """JSON columns decoded; a row whose JSON is invalid becomes an issue."""
        if not plan.json_columns:
            return list(page)
        prepared: list[Row | RecordIssue] = []
        builder = self._builders[stream]
        for row in page:
            column = ""
            try:
                for column in plan.json_columns:
                    value = row.get(column)
                    if isinstance(value, bytes | bytearray | memoryview):
                        value = bytes(value)
                    if isinstance(value, str | bytes):
                        row[column] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                reason = f"column {column!r} is not valid JSON: {exc}"
                prepared.append(builder.issue(row, IssueAction.QUARANTINED, reason, column))
                continue
            prepared.append(row)
        return prepared

    def plan(self, stream: Stream) -> Plan:
        """The stream's statements, built on first use: probes its columns (``LIMIT 0``)
        once; ``ConfigError`` names every field whose column is missing."""
        plan = self._plans.get(stream)
        if plan is not None:
            return plan
        config = self._streams[stream]
        key = self._stream_key(stream)
        rows = config.rows_config(stream)
        label = ROWS.get(stream, "lines")
        with self._translated(stream):
            available = columns_of(self.engine, config.table, config.query, self.config.schema_name)
            fixed = [(config.key, f"{key}.key"), (config.updated_at, f"{key}.updated_at")]
            fixed += [(column, f"{key}.json_columns") for column in config.json_columns]
            json_columns = list(config.json_columns)
            if rows is not None and rows.path is not None:
                column = column_of(rows.path, available)
                fixed.append((column, f"{key}.{label}.path"))
                json_columns.append(column)
            main = needed(config.fields, fixed, available, f"{key}.fields", origin(config))
            child = self._child_columns(rows, f"{key}.{label}")
        issues = [*main.missing, *(child.missing if child else ())]
        if issues:
            raise ConfigError(issues)
        children = None
        if rows is not None and child is not None:
            children = Children(rows, child.columns, ATTACHED[label])
        pages = KeysetPages(
            self.engine,
            config,
            columns=main.columns,
            schema=self.config.schema_name,
            zone=self._update_zone(config),
            page_size=self.config.page_size,
            children=children,
        )
        plan = Plan(pages, tuple(dict.fromkeys(json_columns)))
        self._plans[stream] = plan
        return plan

    def _child_columns(self, rows: RowsConfig | None, key: str) -> Needed | None:
        if rows is None or not rows.joined:
            return None
        assert rows.key is not None
        available = columns_of(self.engine, rows.table, rows.query, self.config.schema_name)
        fixed = [(rows.key, f"{key}.key"), *((c, f"{key}.order_by") for c in rows.order_by)]
        return needed(rows.fields, fixed, available, f"{key}.fields", origin(rows))

    def _update_zone(self, config: SqlStream) -> Any:
        given = config.fields.get("updated_at")
        if given is not None and given.timezone:
            return normalize.timezone(given.timezone)
        return self.zone

    def _translated(self, stream: Stream) -> AbstractContextManager[None]:
        password = make_url(self.config.url.get_secret_value()).password
        return translated(self.key, stream.value, password)

    # --- checking ---------------------------------------------------------------------

    def _check_stream(self, stream: Stream) -> Check:
        config = self._streams[stream]
        shown = make_url(self.config.url.get_secret_value()).render_as_string(hide_password=True)
        what = f"{stream} ({origin(config)} on {shown})"
        try:
            plan = self.plan(stream)
            with self._translated(stream):
                first = plan.pages.run(plan.pages.sample, {})
        except (ConfigError, AuthError) as exc:
            return Check(what, False, str(exc))
        except ConnectorError as exc:
            return Check(what, False, f"{exc}; check that the database is reachable from here")
        if not first:
            return Check(what, True, "connected; the stream is empty")
        problem = type_problem(config, first[0][config.updated_at])
        if problem:
            return Check(what, False, f"{self._stream_key(stream)}.updated_at_type: {problem}")
        prepared = self._prepared(stream, plan, first)
        outcome = [
            item
            for row in prepared
            for item in (
                (row,) if isinstance(row, RecordIssue) else self._builders[stream].outcome(row)
            )
        ]
        issues = [item for item in outcome if isinstance(item, RecordIssue)]
        detail = "connected; the first row maps cleanly"
        if issues:
            detail = f"connected; the first row would be {issues[0].action}: {issues[0].reason}"
        return Check(what, True, detail)
