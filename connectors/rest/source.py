"""``RestSource``: reads customers, orders and carts from a JSON REST API, page by page.

Incremental reads ask the API for records updated after ``since`` (when the stream has an
incremental parameter) and, in any case, drop records whose ``updated_at`` is outside
``(since, until]`` before mapping them: a record changed after the run started belongs to
the next run, whose ``since`` will be at or before it. Duplicates across pages are yielded
as they come; the core de-duplicates by (id, updated_at). One bad record becomes a
quarantined ``RecordIssue`` and the read goes on.

Offset and page-number listings that a change can reorder (any declared ``order`` but
``id``) are watched while they are read and read again from the first page when records
moved under the read, so no record slides past it unread (``connectors.rest.shifts``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import httpx

from connectors.http import (
    BudgetRegistry,
    Classification,
    Classifier,
    Decision,
    HttpClient,
    RetrySettings,
    classify_with,
)
from connectors.http.pagination import NextPage, body
from connectors.http.retry import Sleep
from connectors.records import Builder, MappingContext
from connectors.records.paths import compile_path
from connectors.rest.auth import build_auth, secrets_of
from connectors.rest.config import RestConfig
from connectors.rest.pagination import build_paginator
from connectors.rest.shifts import reread, watch_for
from connectors.rest.streams import StreamConfig, compile_mapping
from crmsync import normalize
from crmsync.contract import Check, ConnectorConfig, ConnectorContext
from crmsync.errors import (
    AuthError,
    ConfigError,
    ConfigIssue,
    ConnectorError,
    TransientError,
)
from crmsync.records import Record, RecordIssue, Stream

EXCERPT = 200


class RestSource:
    kind: ClassVar[str] = "rest"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "rest.toml"
    config_model: ClassVar[type[ConnectorConfig]] = RestConfig

    def __init__(
        self,
        config: RestConfig | Mapping[str, Any],
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep | None = None,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        self.config = config if isinstance(config, RestConfig) else RestConfig(**config)
        self.context = context
        self._transport = transport
        self._sleep = sleep
        self._budgets = budgets
        ctx = MappingContext(
            tz=normalize.timezone(self.config.timezone or context.timezone),
            region=self.config.phone_region or context.default_region,
        )
        self._streams: dict[Stream, StreamConfig] = {
            Stream(name): stream for name, stream in self.config.streams.items() if stream.enabled
        }
        self._mappers: dict[Stream, Builder] = {}
        issues: list[ConfigIssue] = []
        for stream, stream_config in self._streams.items():
            try:
                self._mappers[stream] = compile_mapping(
                    stream, stream_config, ctx, f"sources.{context.name}.streams.{stream}"
                )
            except ConfigError as exc:
                issues.extend(exc.issues)
        if issues:
            raise ConfigError(issues)
        self._client = self._make_client(self.config.http.retry)
        self._check_client: HttpClient | None = None

    # --- the Source protocol ----------------------------------------------------------

    def streams(self) -> Sequence[Stream]:
        return list(self._streams)

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        config = self._streams.get(stream)
        if config is None:
            return
        mapper = self._mappers[stream]
        for page in self._read_pages(stream, config, since, until):
            for raw in page:
                yield from self._convert(stream, mapper, raw, since, until)

    def raw_pages(self, stream: Stream, since: datetime | None = None) -> Iterator[list[Any]]:
        """The decoded JSON records page by page, before mapping: for diagnostics and bench."""
        config = self._streams.get(stream)
        if config is not None:
            yield from (records for _, records in self._pages(stream, config, since))

    def mapper(self, stream: Stream) -> Builder:
        """The compiled mapping of ``stream`` (pure: decoded JSON record -> canonical record)."""
        return self._mappers[stream]

    def check(self) -> list[Check]:
        return [self._check_stream(stream, config) for stream, config in self._streams.items()]

    def close(self) -> None:
        self._client.close()
        if self._check_client is not None:
            self._check_client.close()

    # --- reading ----------------------------------------------------------------------

    def _read_pages(
        self, stream: Stream, config: StreamConfig, since: datetime | None, until: datetime
    ) -> Iterator[list[Any]]:
        """The stream's pages; a listing that can move under the read is watched and read
        again until one pass saw it hold still (``connectors.rest.shifts``)."""
        mapper = self._mappers[stream]
        watch = watch_for(config, until, mapper.updated_at, mapper.external_id)
        if watch is None:
            return (records for _, records in self._pages(stream, config, since))
        key = f"sources.{self.context.name}.streams.{stream}"
        return reread(lambda: self._pages(stream, config, since), watch, key, config.max_rereads)

    def _pages(
        self, stream: Stream, config: StreamConfig, since: datetime | None
    ) -> Iterator[tuple[httpx.Response, list[Any]]]:
        paginator = build_paginator(config)
        params: dict[str, Any] = {key: _param(value) for key, value in config.params.items()}
        if config.page_size_param:
            params[config.page_size_param] = str(config.page_size)
        if since is not None and config.incremental_param:
            params[config.incremental_param] = _format_since(since, config)
        params.update(paginator.first())
        url: str = config.path
        query: dict[str, Any] | None = params
        records = compile_path(config.records_path)
        classifier = self._classifier(stream)
        while True:
            response = self._client.get(url, params=query, classifier=classifier)
            self._raise_for_refusal(stream, response)
            yield response, self._records(stream, config, response, records)
            following = paginator.next(response)
            if following is None:
                return
            url, query = self._follow(following, config, params)

    def _follow(
        self, following: NextPage, config: StreamConfig, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        if following.url is None:
            params.update(following.params)
            return config.path, params
        target = httpx.URL(following.url)
        base = httpx.URL(self.config.base_url)
        if target.is_absolute_url and target.host != base.host:
            raise ConnectorError(
                f"the API's next-page link points to another host ({target.host}); "
                "refusing to send the credentials there"
            )
        return following.url, None

    def _records(
        self,
        stream: Stream,
        config: StreamConfig,
        response: httpx.Response,
        records: Any,
    ) -> list[Any]:
        try:
            document = body(response)
        except ValueError as exc:
            raise ConfigError(
                f"{stream}: the response to {response.request.url.path} is not JSON",
                key=f"sources.{self.context.name}.streams.{stream}.path",
                hint="check base_url and the stream's path",
            ) from exc
        found = records(document)
        if not isinstance(found, list):
            raise ConfigError(
                f"{stream}: no list of records at records_path {config.records_path!r}",
                key=f"sources.{self.context.name}.streams.{stream}.records_path",
                hint="point records_path at the list in the response body ('' = the body)",
            )
        return found

    def _convert(
        self,
        stream: Stream,
        mapper: Builder,
        raw: Any,
        since: datetime | None,
        until: datetime,
    ) -> tuple[Record | RecordIssue, ...]:
        """The record (and its corrections) or the quarantined issue; () outside the window."""
        return mapper.outcome(raw, since, until)

    def _raise_for_refusal(self, stream: Stream, response: httpx.Response) -> None:
        """A list endpoint refusing the request is a configuration problem, not a record's."""
        if response.status_code < 400:
            return
        excerpt = response.text[:EXCERPT]
        raise ConfigError(
            f"{stream}: HTTP {response.status_code} from {response.request.url.path}: {excerpt}",
            key=f"sources.{self.context.name}.streams.{stream}",
            hint="check the stream's params, page_size_param and incremental_param",
        )

    # --- checking ---------------------------------------------------------------------

    def _check_stream(self, stream: Stream, config: StreamConfig) -> Check:
        what = f"{self.context.name} {stream} ({self.config.base_url.rstrip('/')}{config.path})"
        if self._check_client is None:
            self._check_client = self._make_client(RetrySettings(attempts=1))
        params: dict[str, Any] = {key: _param(value) for key, value in config.params.items()}
        params.update(build_paginator(config).first())
        if config.page_size_param:
            params[config.page_size_param] = "1"
        try:
            response = self._check_client.get(
                config.path, params=params, classifier=self._classifier(stream)
            )
            self._raise_for_refusal(stream, response)
            found = self._records(stream, config, response, compile_path(config.records_path))
        except (AuthError, ConfigError) as exc:
            return Check(what, False, str(exc))
        except TransientError as exc:
            return Check(
                what,
                False,
                f"{exc}; the server did not answer in time or failed: check that base_url is "
                f"reachable from here (timeout {self._check_client.settings.timeout}s)",
            )
        return Check(what, True, f"HTTP {response.status_code}, {len(found)} record(s) read")

    # --- plumbing ---------------------------------------------------------------------

    def _classifier(self, stream: Stream) -> Classifier:
        path = self._streams[stream].path
        return classify_with(
            {
                404: Classification(
                    Decision.CONFIG_FAILURE,
                    f"nothing at {path} (HTTP 404); check base_url and "
                    f"sources.{self.context.name}.streams.{stream}.path",
                )
            }
        )

    def _make_client(self, retry: RetrySettings) -> HttpClient:
        settings = self.config.http.settings(self.config.base_url, retry=retry)
        extra: dict[str, Any] = {"sleep": self._sleep} if self._sleep is not None else {}
        if self._budgets is not None:
            extra["budgets"] = self._budgets
        return HttpClient(
            settings,
            account=f"rest:{httpx.URL(self.config.base_url).netloc.decode()}",
            auth=build_auth(self.config.auth),
            headers=self.config.headers,
            secrets=secrets_of(self.config.auth),
            transport=self._transport,
            **extra,
        )


def _param(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _format_since(since: datetime, config: StreamConfig) -> str:
    moment = since.astimezone(UTC)
    match config.incremental_format:
        case "epoch":
            return str(int(moment.timestamp()))
        case "epoch_ms":
            return str(int(moment.timestamp() * 1000))
        case "strftime":
            return moment.strftime(config.incremental_strftime)
        case _:
            return moment.isoformat().replace("+00:00", "Z")
