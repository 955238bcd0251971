"""The compiled mapping of one stream: raw row in, canonical record (or issue) out.

``Builder.build`` runs the stream's steps, one flat sequence of ``(position, step)``,
into a list in the record constructor's order and hands it to the stream's assembler
(``assemble``), which computes what the mapping leaves to the rows. The steps are
written into one function per stream (and one per row of a record) by ``generate``, so
nothing is looked up by name per row and a plain value costs one call, its conversion.
Built by ``compile.compile_stream``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from connectors.records.context import RowError
from connectors.records.generate import record_function, row_function
from connectors.records.paths import Getter
from connectors.records.steps import Step
from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.records import IssueAction, Record, RecordIssue, Stream

EXCERPT = 200
UNSET: Any = object()  # build(updated=...) not given: the builder reads updated_at
Layout = tuple[tuple[int, Step], ...]
Assemble = Callable[[list[Any], tuple[Any, ...]], Record]


class Builder:
    """Builds the canonical records of one stream from raw rows (pure: no I/O)."""

    def __init__(
        self,
        stream: Stream,
        layout: Layout,
        template: list[Any],
        assemble: Assemble,
        updated: tuple[int, Step] | None,
        raw_id: Getter,
        rows: Rows | None,
    ) -> None:
        self.stream = stream
        self._layout = layout
        self._template = template
        self._assemble = assemble
        self._updated = updated
        self._raw_id = raw_id
        self._rows = rows
        self._build = record_function(
            layout, updated, template, assemble, rows.build if rows else None, UNSET
        )

    def updated_at(self, raw: Any) -> datetime | None:
        """Read first, so rows outside (since, until] are skipped before the full build."""
        if self._updated is None:
            return None
        value: datetime | None = self._updated[1](raw, [])
        return value

    def external_id(self, raw: Any) -> str | None:
        """The row's id as written (for issues), or None; never raises."""
        try:
            value = self._raw_id(raw)
        except (RecordError, AttributeError, TypeError):
            return None
        cleaned = "" if value is None else str(value).strip()[:128]
        return cleaned or None

    def build(
        self,
        raw: Any,
        notes: normalize.Notes,
        updated: Any = UNSET,
        rows: Sequence[Any] | None = None,
    ) -> Record:
        """The record of ``raw``; ``updated`` when already read, ``rows`` to give the
        record's rows directly (CSV rows of one order) instead of reading its rows path.
        Raises ``RecordError`` (``RowError`` for a bad row) naming the field."""
        record: Record = self._build(raw, notes, updated, rows)
        return record

    def outcome(
        self, raw: Any, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[Record | RecordIssue, ...]:
        """What a source yields for one row: nothing when its ``updated_at`` is outside
        (since, until]; else the record and one *corrected* issue per note, or one
        *quarantined* issue naming the field."""
        notes: normalize.Notes = []
        try:
            updated = self.updated_at(raw)
            if updated is not None and (
                (until is not None and updated > until) or (since is not None and updated <= since)
            ):
                return ()
            record = self.build(raw, notes, updated)
        except RecordError as exc:
            return (self.issue(raw, IssueAction.QUARANTINED, exc.reason, exc.field),)
        if not notes:
            return (record,)
        corrected = IssueAction.CORRECTED
        return (record, *(self.issue(raw, corrected, change, field) for field, change in notes))

    def issue(self, raw: Any, action: IssueAction, reason: str, field: str) -> RecordIssue:
        """An issue about ``raw``: the reason led by the field, a JSON excerpt of the row."""
        try:
            shown = raw if isinstance(raw, dict | list) else dict(raw)
            excerpt = orjson.dumps(shown, default=str).decode()
        except (TypeError, ValueError, orjson.JSONEncodeError):
            excerpt = repr(raw)
        if len(excerpt) > EXCERPT:
            excerpt = excerpt[:EXCERPT] + "..."
        reason = f"{field}: {reason}" if field else reason
        return RecordIssue(self.stream, self.external_id(raw), action, reason, field, excerpt)


class Rows:
    """An order's lines or a cart's items: where the list is and how each row is built."""

    def __init__(
        self, getter: Getter, layout: Layout, template: list[Any], kind: type, label: str | None
    ) -> None:
        self.getter = getter
        self.layout = layout
        self.template = template
        self.kind = kind
        self.label = label
        self._row = row_function(layout, template, kind)

    def name(self, index: int, field: str) -> str:
        if self.label is None:
            return field
        return f"{self.label}[{index}].{field}" if field else f"{self.label}[{index}]"

    def build(
        self, raw: Any, notes: normalize.Notes, given: Sequence[Any] | None
    ) -> tuple[Any, ...]:
        found = given if given is not None else self.getter(raw)
        if found is None:
            return ()
        if not isinstance(found, list | tuple):
            raise RecordError("expected a list of rows", field=self.label or "")
        built = []
        row = self._row
        for index, item in enumerate(found):
            mark = len(notes)
            try:
                if not hasattr(item, "get"):
                    raise RecordError(f"expected an object, got {type(item).__name__}")
                built.append(row(item, notes))
            except RecordError as exc:
                field = self.name(index, exc.field)
                raise RowError(exc.reason, field=field, row=index, value=exc.value) from exc
            if len(notes) > mark and self.label is not None:
                notes[mark:] = [(self.name(index, f), change) for f, change in notes[mark:]]
        return tuple(built)
