"""A dry read of the first records of each stream, for ``crmsync check``.

A configuration can be valid and still read almost nothing: a column mapped to the wrong
field, a date format that matches no row, an export in another encoding. A run would
then quarantine most records and finish with exit 0. ``check`` reads a sample through
the source's own mapping (nothing is staged, no cursor moves) and warns when most of it
would be quarantined, with the count and the first reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from crmsync.contract import Source
from crmsync.records import IssueAction, RecordIssue, Stream

SAMPLE = 200  # records read per stream
REASONS = 3  # first reasons shown


@dataclass(frozen=True, slots=True)
class Reason:
    """Quarantined records of a sample sharing a field: how many, and the first one's
    reason (with its line and value) as an example."""

    field: str
    count: int
    example: str


@dataclass(frozen=True, slots=True)
class StreamSample:
    """What the first ``read`` records of one stream came to."""

    stream: Stream
    read: int  # records read (staged ones and quarantined ones)
    quarantined: int
    reasons: tuple[Reason, ...]  # the first fields that quarantined records, by count

    @property
    def mostly_quarantined(self) -> bool:
        return self.read > 0 and self.quarantined * 2 > self.read

    def describe(self) -> str:
        text = f"{self.stream}: first {self.read} record(s), {self.quarantined} quarantined"
        shown = [f"{r.field or 'record'} {r.count}, e.g. {r.example}" for r in self.reasons]
        return text + (" (" + "; ".join(shown) + ")" if shown else "")


def sample_stream(source: Source, stream: Stream, until: datetime) -> StreamSample:
    """Reads up to ``SAMPLE`` records of ``stream`` (a full read, stopped early)."""
    read = quarantined = 0
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    items = source.read(stream, None, until)
    try:
        for item in islice(items, SAMPLE * 4):  # corrections come beside their record
            if isinstance(item, RecordIssue):
                if item.action is not IssueAction.QUARANTINED:
                    continue
                quarantined += 1
                counts[item.field] = counts.get(item.field, 0) + 1
                examples.setdefault(item.field, _short(item.reason))
            read += 1
            if read >= SAMPLE:
                break
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
    ranked = sorted(counts, key=lambda name: -counts[name])[:REASONS]
    reasons = tuple(Reason(name, counts[name], examples[name]) for name in ranked)
    return StreamSample(stream, read, quarantined, reasons)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
