"""What a source tells the compiler besides the field specs: how its rows are spelled
(time zone, date formats, phone region, flat or nested keys), how issues name a field,
and the TOML keys its mapping lives under."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo

from crmsync.errors import RecordError
from crmsync.normalize import Memo


@dataclass(frozen=True, slots=True)
class MappingContext:
    tz: tzinfo = UTC  # naive times without a zone of their own are in this zone
    region: str = "TR"  # phone numbers without a country code
    time_format: str | None = None  # strptime format of times with no format of their own
    birthday_format: str | None = None  # the same for birthdays
    flat: bool = False  # a path is one literal key (CSV columns), never a dotted path
    source_names: bool = False  # issues name the source's path ("total_price"), not "total"
    # e-mail and phone outcomes already found; a source passes one Memo to all its streams
    memo: Memo = field(default_factory=Memo, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MappingKeys:
    """The TOML keys of a stream's mapping, for config errors: the table of fields, the
    table of row fields and the key of the rows' path."""

    fields: str
    rows_fields: str = ""
    rows_path: str = ""
    rows_label: str | None = None  # issues name a row's field as "<label>[2].quantity"

    @classmethod
    def nested(cls, stream_key: str, rows: str = "lines") -> MappingKeys:
        """REST-style: ``<stream>.fields`` and ``<stream>.<rows>.path`` / ``.fields``."""
        return cls(
            f"{stream_key}.fields", f"{stream_key}.{rows}.fields", f"{stream_key}.{rows}.path", rows
        )


class RowError(RecordError):
    """A bad value in one of a record's rows; ``row`` is its index in the list."""

    def __init__(self, reason: str, *, field: str, row: int, value: object = None) -> None:
        super().__init__(reason, field=field, value=value)
        self.row = row
