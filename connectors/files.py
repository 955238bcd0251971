"""The files source (``kind = "files"``): customers, orders and carts from export files.

Reads CSV or JSON-lines exports row by row (memory stays flat however big the file),
maps the file's columns onto canonical fields through the shared record-mapping language
(``connectors.records``; the columns are configured in ``files_config``), and yields
either a record or a ``RecordIssue``: a bad row is quarantined with its line number, the
offending column and an excerpt, and the next row is read; an invalid optional value is
cleared and reported as corrected.

The three streams share one ``normalize.Memo``, so an address validated on a customer
is not validated again on its orders and carts. ``version`` gives a token of each file
(and its mapping) so that a pull can skip a file that has not changed.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import ValidationError

from connectors import files_window
from connectors.files_check import check_file, mapped_columns
from connectors.files_config import FilesSourceConfig, StreamFile
from connectors.files_rows import (
    BadRow,
    HashedLines,
    Point,
    Row,
    adjacent_groups,
    byte_position,
    csv_rows,
    excerpt,
    line_starts,
    numbered_rows,
    open_binary,
    open_text,
    plain_csv,
)
from connectors.files_start import StartProof
from connectors.records import Builder, FieldSpec, RowError, compile_stream
from connectors.records.builder import UNSET
from connectors.records.paths import Getter, compile_path
from crmsync import normalize
from crmsync.contract import Check, ConnectorContext, Span
from crmsync.errors import ConfigError, ConfigIssue, RecordError
from crmsync.records import IssueAction, Record, RecordIssue, Stream

QUARANTINED, CORRECTED = IssueAction.QUARANTINED, IssueAction.CORRECTED
# what a resume point of this source starts with (``resume_point``); lines-v1 points held
# SHA-256 digests: a file given one is read whole once, and then has a lines-v2 point
POINT = "lines-v2"
log = logging.getLogger(__name__)

Unit = list[Row] | Row  # a record's rows: several for CSV orders with one row per line


class FilesSource:
    """Reads each configured stream's export file afresh on every ``read``; holds no state."""

    kind: ClassVar[str] = "files"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "files.toml"
    reads_network: ClassVar[bool] = False  # `check --offline` samples local files too
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
        memo = normalize.Memo()  # one for every stream: orders repeat their customer's e-mail
        self._builders = {
            stream: compile_stream(
                stream,
                spec.mapping(),
                spec.rows(),
                keys=spec.keys(f"{self.key}.{stream}"),
                context=spec.context(tz=self.tz, region=context.default_region, memo=memo),
            )
            for stream, spec in self.config.files().items()
        }
        self._open: weakref.WeakSet[Generator[Record | RecordIssue]] = weakref.WeakSet()
        self._positions: dict[Stream, Callable[[], int]] = {}  # per stream being read
        self._resume: dict[Stream, str] = {}  # where the next read may start (``resume_from``)
        self._reached: dict[Stream, str] = {}  # where the last whole read ended
        self._went_on: set[Stream] = set()  # streams whose last read began at a point
        self._whole: set[Stream] = set()  # streams whose last read went through all rows
        self._spans: dict[Stream, Span] = {}  # the part the next read takes (``read_span``)
        self._proofs: dict[Stream, StartProof] = {}  # starts being proved (``resume_from``)

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

    def version(self, stream: Stream) -> str | None:
        """The file's identity (resolved path, size, modification time in ns) and a digest
        of how it is read (mapping, zone, region): any change to either changes the token.
        None when the stream is not configured or the file cannot be stat'ed."""
        spec = self.config.files().get(stream)
        if spec is None:
            return None
        try:
            path = self.path(spec).resolve()
            found = path.stat()
        except OSError:
            return None
        return f"{path}|{found.st_size}|{found.st_mtime_ns}|{self._reading(spec)}"

    def _reading(self, spec: StreamFile) -> str:
        """A digest of how a stream's file is read: its mapping, zone and region."""
        reading = f"{spec.model_dump_json()}|{self.tz}|{self.context.default_region}"
        return hashlib.sha256(reading.encode()).hexdigest()[:16]

    def resume_from(self, stream: Stream, point: str | None) -> None:
        """Where the next read of ``stream`` may start (``Resumable``): a point an earlier
        whole read of it reached (``resume_point``). Only a JSON-lines file is read from
        there, and only when it still begins with exactly the bytes that read went
        through (hashed again to tell) and is read with the same mapping; any other
        file, or a point that does not hold, is read whole. The start is proved from
        here on, in a thread (``files_start``), beside whatever is read before it."""
        if point is None:
            self._resume.pop(stream, None)
        else:
            self._resume[stream] = point
        spec = self.config.files().get(stream)
        start = self._start(stream, spec) if spec is not None else None
        proof = self._proofs.get(stream)
        if proof is not None and proof.start == start:
            return  # the same point again, before its read: the proof goes on
        if proof is not None:
            self._proofs.pop(stream).close()
        if start is not None and spec is not None and spec.file_format() == "jsonl":
            self._proofs[stream] = StartProof(self.path(spec), start)

    def resume_point(self, stream: Stream) -> str | None:
        """Where the last read of ``stream`` ended, once it was read to its end (a
        JSON-lines file: the length and XXH3-128 of its whole lines); None for a read cut
        short or another kind of file."""
        return self._reached.get(stream)

    def read_whole(self, stream: Stream) -> bool:
        """Whether the last read of ``stream`` went through its whole file
        (``Exhaustive``): to its end, from its start (not from a point given), with no
        window dropping rows changed before ``since``."""
        return stream in self._whole

    def _start(self, stream: Stream, spec: StreamFile) -> Point | None:
        """The point to read ``stream`` from, when it was given one made by this reading
        of the file (``POINT``, the same mapping digest)."""
        given = self._resume.get(stream)
        if given is None:
            return None
        kind, reading, length, lines, digest = [*given.split("|"), "", "", "", ""][:5]
        if kind != POINT or reading != self._reading(spec):
            return None
        if not (length.isdigit() and lines.isdigit() and digest):
            return None
        return Point(int(length), int(lines), digest)

    def divide(self, stream: Stream, parts: int) -> list[Span]:
        """At most ``parts`` spans of about as many bytes that cover a JSON-lines file,
        each starting where a line starts (``Divisible``); a single span for any other
        file (a CSV row may hold line breaks inside quotes; a compressed file cannot be
        entered part-way) or a file too small to cut."""
        whole = [Span(0, None)]
        spec = self.config.files().get(stream)
        if spec is None or parts < 2 or spec.file_format() != "jsonl":
            return whole
        path = self.path(spec)
        if path.suffix.lower() == ".gz":
            return whole
        try:
            with path.open("rb") as handle:
                cuts = line_starts(handle, path.stat().st_size, parts)
        except OSError:
            return whole
        starts = [0, *cuts]
        return [Span(a, b) for a, b in zip(starts, [*cuts, None], strict=True)]

    def read_span(self, stream: Stream, span: Span | None) -> None:
        """The next read of ``stream`` takes only ``span`` of its file (None: all of it)."""
        if span is None or span == Span(0, None):
            self._spans.pop(stream, None)
        else:
            self._spans[stream] = span

    def size(self, stream: Stream) -> int | None:
        """The file's size in bytes (a compressed file's compressed size)."""
        spec = self.config.files().get(stream)
        if spec is None:
            return None
        try:
            return self.path(spec).stat().st_size
        except OSError:
            return None

    def position(self, stream: Stream) -> int | None:
        """Bytes of the stream's file read so far by its read in progress, for progress."""
        tell = self._positions.get(stream)
        if tell is None:
            return None
        try:
            return tell()
        except (OSError, ValueError):  # the file is closed: the read is over
            return None

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
        for proof in self._proofs.values():
            proof.close()
        self._proofs.clear()

    def _proved(
        self, stream: Stream, start: Point | None
    ) -> tuple[tuple[IO[bytes], Any] | None, Point | None]:
        """The proof of this read's ``start`` (``resume_from`` began it), taken: (the
        file's handle past the start and the hasher holding it, the start), or (None,
        None) when it found the file changed before the point, to be read whole; (None,
        ``start``) when there is no proof of it, or it could not read the file, and the
        read proves the start itself."""
        proof = self._proofs.pop(stream, None)
        if proof is None or proof.start != start:
            if proof is not None:
                proof.close()
            return None, start
        try:
            proved = proof.take()
        except OSError:  # the file could not be read then (gone for a moment, say)
            return None, start  # the read opens it again and proves the start itself
        return proved, (start if proved is not None else None)

    def _read(
        self, stream: Stream, spec: StreamFile, since: datetime | None, until: datetime
    ) -> Generator[Record | RecordIssue]:
        builder = self._builders[stream]
        csv_lines = spec.file_format() == "csv" and spec.rows() is not None
        window = _Window(spec, self.tz, since, until) if spec.updated_at else None
        # the window's time is the record's updated_at when both read it alike: parse it once
        shared = window is not None and window.reads_as(spec)
        # rows surely outside the window are dropped on their raw time, before any row work
        fast = files_window.prefilter(spec, since, until) if window is not None else None
        build = builder.build
        self._whole.discard(stream)
        for unit in self._units(stream, spec, csv_lines, fast):
            if isinstance(unit, BadRow):
                reason = f"line {unit.line}: {unit.reason}"
                yield RecordIssue(stream, None, QUARANTINED, reason, "", excerpt(unit.text))
                continue
            rows = unit if isinstance(unit, list) else [unit]
            head = rows[0].values
            notes: normalize.Notes = []
            try:
                updated = UNSET  # the builder reads it
                if window is not None:
                    changed = window.changed(head)
                    if not window.holds(changed):
                        continue
                    if shared:
                        updated = changed
                lines = [row.values for row in rows] if csv_lines else None
                record = build(head, notes, updated, lines)
            except RecordError as exc:
                yield _quarantined(stream, builder, rows, exc, csv_lines)
                continue
            for field, change in notes:
                reason = f"{_where(rows)}: {change}"
                yield RecordIssue(
                    stream, record.external_id, CORRECTED, reason, field, excerpt(rows[0].text)
                )
            yield record
        if (window is None or since is None) and stream not in self._went_on:
            self._whole.add(stream)

    def _units(
        self,
        stream: Stream,
        spec: StreamFile,
        csv_lines: bool,
        fast: files_window.WindowPrefilter | None = None,
    ) -> Iterator[Unit | BadRow]:
        """The file's rows (a CSV order's adjacent rows as one unit); ``fast`` drops rows
        outside the read's window before rows are made of them (not CSV rows read in
        groups, where only a group's first row is the record's)."""
        path = self.path(spec)
        if not path.is_file():
            raise ConfigError(
                f"file not found: {path}",
                key=f"{self.key}.{stream}.path",
                hint=f"relative paths are read from {self.context.config_dir}",
            )
        try:
            self._went_on.discard(stream)
            if spec.file_format() == "jsonl":
                self._reached.pop(stream, None)
                span = self._spans.get(stream)
                start = self._start(stream, spec) if span is None else None
                proved, start = self._proved(stream, start)
                binary, hasher = proved if proved is not None else (open_binary(path), None)
                with binary:
                    self._positions[stream] = byte_position(binary)
                    drop = fast.row_outside if fast is not None else None
                    lines = HashedLines(binary, start, span, hasher)
                    yield from numbered_rows(lines, spec.encoding, drop)
                if lines.resumed:
                    self._went_on.add(stream)
                    log.info(
                        "%s.%s: read from byte %d: the file still begins with what its "
                        "last read went through",
                        self.context.name,
                        stream.value,
                        lines.resumed,
                    )
                if lines.reached is not None:
                    point = lines.reached
                    self._reached[stream] = (
                        f"{POINT}|{self._reading(spec)}|{point.length}|{point.lines}|{point.digest}"
                    )
                return
            with open_text(path, spec.encoding) as handle:
                self._positions[stream] = byte_position(handle)

                def require(header: list[str]) -> None:
                    self._require_columns(stream, header, spec)

                if csv_lines:
                    rows = csv_rows(handle, spec.delimiter, require)
                    yield from adjacent_groups(rows, spec.id_column())
                elif fast is not None:  # an incremental read: most rows are dropped
                    cells = (fast.column, fast.outside)
                    plain = plain_csv(handle, spec.encoding)
                    yield from csv_rows(handle, spec.delimiter, require, cells, plain)
                else:
                    yield from csv_rows(handle, spec.delimiter, require)
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


class _Window:
    """The (since, until] test on the file's ``updated_at`` column, before a row is built."""

    def __init__(self, spec: StreamFile, tz: Any, since: datetime | None, until: datetime) -> None:
        self.column = spec.updated_at or ""
        self.get: Getter = compile_path(self.column, flat=spec.file_format() == "csv")
        self.tz, self.fmt = tz, spec.date_format or None
        self.since, self.until = since, until

    def changed(self, head: Mapping[str, Any]) -> datetime | None:
        return normalize.timestamp(self.get(head), self.column, tz=self.tz, fmt=self.fmt)

    def holds(self, changed: datetime | None) -> bool:
        if changed is None:
            return True  # cannot tell: read it, the core de-duplicates
        return (self.since is None or changed > self.since) and changed <= self.until

    def reads_as(self, spec: StreamFile) -> bool:
        """Whether the mapping's updated_at is this column read the same way (same zone,
        same format; an epoch format is read apart by the mapping), so its value is ours."""
        mapped = spec.mapping().get("updated_at")
        plain = mapped is not None and mapped == FieldSpec(path=self.column)
        return plain and self.fmt not in ("epoch", "epoch_ms")


def _quarantined(
    stream: Stream, builder: Builder, rows: list[Row], exc: RecordError, csv_lines: bool
) -> RecordIssue:
    """The issue of a record that cannot be built, pointing at the row to fix."""
    shown, where = rows[0], _where(rows)
    if isinstance(exc, RowError) and csv_lines and exc.row < len(rows):
        shown = rows[exc.row]
        where = f"line {shown.line}"
    external_id = builder.external_id(rows[0].values)
    reason = f"{where}: {exc.reason}"
    return RecordIssue(stream, external_id, QUARANTINED, reason, exc.field, excerpt(shown.text))


def _where(rows: list[Row]) -> str:
    if len(rows) == 1:
        return f"line {rows[0].line}"
    return f"lines {rows[0].line}-{rows[-1].line}"
