"""The files source (``kind = "files"``): customers, orders and carts from export files.

Reads CSV or JSON-lines exports row by row (memory stays flat however big the file),
maps the file's columns onto canonical fields (see ``files_config``), normalises every
value, and yields either a record or a ``RecordIssue``: a bad row is quarantined with
its line number, the offending column and an excerpt, and the next row is read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError

from connectors.files_build import (
    Parsing,
    View,
    cart,
    cart_item,
    customer,
    lookup,
    order,
    order_line,
)
from connectors.files_check import check_file, mapped_columns
from connectors.files_config import CustomersFile, FilesSourceConfig, LinedFile, StreamFile
from connectors.files_rows import (
    BadRow,
    Row,
    adjacent_groups,
    csv_rows,
    excerpt,
    jsonl_rows,
    open_binary,
    open_text,
)
from crmsync import normalize
from crmsync.contract import Check, ConnectorContext
from crmsync.errors import ConfigError, ConfigIssue, RecordError
from crmsync.records import IssueAction, Record, RecordIssue, Stream

QUARANTINED, CORRECTED = IssueAction.QUARANTINED, IssueAction.CORRECTED

Unit = list[Row] | Row  # a record's rows: several for CSV orders with one row per line
RecordBuilder = Callable[[View, Sequence[Any], Parsing, normalize.Notes], Record]
LineBuilder = Callable[[View, normalize.Notes], Any]


def _customer(head: View, _: Sequence[Any], parsing: Parsing, notes: normalize.Notes) -> Record:
    return customer(head, parsing, notes)


_BUILDERS: dict[Stream, tuple[RecordBuilder, LineBuilder | None]] = {
    Stream.CUSTOMERS: (_customer, None),
    Stream.ORDERS: (order, order_line),
    Stream.CARTS: (cart, cart_item),
}


class FilesSource:
    """Reads each configured stream's export file afresh on every ``read``; holds no state."""

    kind: ClassVar[str] = "files"
    config_model: ClassVar[type[FilesSourceConfig]] = FilesSourceConfig

    def __init__(self, config: FilesSourceConfig | Mapping[str, Any], context: ConnectorContext):
        self.context = context
        self.key = f"sources.{context.name}"
        self.config = self._validated(config)
        zone = self.config.timezone or context.timezone
        try:
            self.tz = normalize.timezone(zone)
        except RecordError as exc:
            raise ConfigError(
                f"unknown time zone {zone!r}", key=f"{self.key}.timezone", hint="use an IANA name"
            ) from exc
        self._open: weakref.WeakSet[Generator[Record | RecordIssue]] = weakref.WeakSet()

    def _validated(self, config: FilesSourceConfig | Mapping[str, Any]) -> FilesSourceConfig:
        if isinstance(config, FilesSourceConfig):
            return config
        try:
            return FilesSourceConfig.model_validate(dict(config))
        except ValidationError as exc:
            issues = [
                ConfigIssue(".".join([self.key, *map(str, error["loc"])]), error["msg"])
                for error in exc.errors()
            ]
            raise ConfigError(issues) from exc

    def streams(self) -> Sequence[Stream]:
        return list(self.config.files())

    def path(self, spec: StreamFile) -> Path:
        return self.context.resolve(spec.path)

    def check(self) -> list[Check]:
        return [
            check_file(stream, spec, self.path(spec), f"{self.key}.{stream}")
            for stream, spec in self.config.files().items()
        ]

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        """Records of ``stream``; with ``updated_at`` set, only rows changed in (since, until]."""
        spec = self.config.files().get(stream)
        if spec is None:
            raise ConfigError(
                f"the files source has no {stream} file", key=f"{self.key}.{stream}.path"
            )
        reader = self._read(stream, spec, since, until)
        self._open.add(reader)
        return reader

    def close(self) -> None:
        for reader in list(self._open):
            reader.close()

    def _read(
        self, stream: Stream, spec: StreamFile, since: datetime | None, until: datetime
    ) -> Generator[Record | RecordIssue]:
        birthday_format = spec.birthday_format if isinstance(spec, CustomersFile) else ""
        parsing = Parsing(
            tz=self.tz,
            date_format=spec.date_format or None,
            birthday_format=birthday_format or None,
            region=self.context.default_region,
        )
        mapping = spec.mapping()
        line_mapping = spec.line_mapping() if isinstance(spec, LinedFile) else {}
        dotted = spec.file_format() == "jsonl"
        build, build_line = _BUILDERS[stream]
        for unit in self._units(stream, spec, mapping, line_mapping):
            if isinstance(unit, BadRow):
                reason = f"line {unit.line}: {unit.reason}"
                yield RecordIssue(stream, None, QUARANTINED, reason, "", excerpt(unit.text))
                continue
            rows = unit if isinstance(unit, list) else [unit]
            head = View(rows[0].values, mapping, dotted)
            shown = rows[0]  # the row the operator is pointed at when something is wrong
            notes: normalize.Notes = []
            try:
                if spec.updated_at and not _in_window(head, spec.updated_at, parsing, since, until):
                    continue
                lines = []
                if build_line is not None and line_mapping:
                    for shown, view in _line_views(spec, rows, line_mapping, dotted):  # noqa: B007
                        lines.append(build_line(view, notes))
                    shown = rows[0]
                record = build(head, lines, parsing, notes)
            except RecordError as exc:
                where = f"line {shown.line}" if shown is not rows[0] else _where(rows)
                reason = f"{where}: {exc.reason}"
                text = excerpt(shown.text)
                yield RecordIssue(stream, _raw_id(head), QUARANTINED, reason, exc.field, text)
                continue
            for field, change in notes:
                reason = f"{_where(rows)}: {change}"
                yield RecordIssue(
                    stream, record.external_id, CORRECTED, reason, field, excerpt(rows[0].text)
                )
            yield record

    def _units(
        self,
        stream: Stream,
        spec: StreamFile,
        mapping: dict[str, str],
        line_mapping: dict[str, str],
    ) -> Iterator[Unit | BadRow]:
        path = self.path(spec)
        if not path.is_file():
            raise ConfigError(
                f"file not found: {path}",
                key=f"{self.key}.{stream}.path",
                hint=f"relative paths are read from {self.context.config_dir}",
            )
        try:
            if spec.file_format() == "jsonl":
                with open_binary(path) as binary:
                    yield from jsonl_rows(binary, spec.encoding)
                return
            with open_text(path, spec.encoding) as handle:

                def require(header: list[str]) -> None:
                    self._require_columns(stream, header, spec)

                rows = csv_rows(handle, spec.delimiter, require)
                if line_mapping:
                    yield from adjacent_groups(rows, mapping["external_id"])
                else:
                    yield from rows
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid {spec.encoding}: {exc.reason} at byte {exc.start}",
                key=f"{self.key}.{stream}.encoding",
                hint="set the file's real encoding, e.g. cp1254 or latin-1",
            ) from exc

    def _require_columns(
        self,
        stream: Stream,
        header: list[str],
        spec: StreamFile,
    ) -> None:
        missing = [
            ConfigIssue(
                f"{self.key}.{stream}.{key}",
                f"column {column!r} is not in the header of {spec.path}",
                f'name one of the file\'s columns ({", ".join(header)}) or set it to ""',
            )
            for key, column in mapped_columns(spec)
            if column not in header
        ]
        if missing:
            raise ConfigError(missing)


def _line_views(
    spec: StreamFile, rows: list[Row], line_mapping: dict[str, str], dotted: bool
) -> Iterator[tuple[Row, View]]:
    """Each line of a record with the row it was written in: CSV rows, or the JSON line list."""
    if not dotted:
        for row in rows:
            yield row, View(row.values, line_mapping, False)
        return
    key = spec.lines if isinstance(spec, LinedFile) else ""
    found = lookup(rows[0].values, key)
    if found is None:
        return
    if not isinstance(found, list):
        raise RecordError("expected a list of line objects", field=key)
    for index, item in enumerate(found):
        if not isinstance(item, Mapping):
            raise RecordError("expected a line object", field=f"{key}[{index}]")
        yield rows[0], View(item, line_mapping, True, f"{key}[{index}].")


def _in_window(
    head: View, column: str, parsing: Parsing, since: datetime | None, until: datetime
) -> bool:
    raw = lookup(head.values, column) if head.dotted else head.values.get(column)
    changed = normalize.timestamp(raw, column, tz=parsing.tz, fmt=parsing.date_format)
    if changed is None:
        return True  # cannot tell: read it, the core de-duplicates
    return (since is None or changed > since) and changed <= until


def _where(rows: list[Row]) -> str:
    if len(rows) == 1:
        return f"line {rows[0].line}"
    return f"lines {rows[0].line}-{rows[-1].line}"


def _raw_id(head: View) -> str | None:
    raw = head.get("external_id")
    if raw is None:
        return None
    cleaned = str(raw).strip()[:128]
    return cleaned or None
