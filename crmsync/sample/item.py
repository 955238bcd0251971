"""The unit the generator emits: a canonical record and, for dirty rows, its raw export row."""

from __future__ import annotations

from typing import Any, NamedTuple

from crmsync.records import Record, Stream


class Item(NamedTuple):
    stream: Stream
    record: Record | None  # what a correct reader makes of the row; None when it must refuse it
    raw: dict[str, Any] | None  # the export row when it is not rendered from ``record``
    style: int  # clean rows: bits that choose how the export spells values (see export.py)
