"""Reading a listing again when it moved under the read, so position paging leaves no gap.

Offset and page-number pages are positions in a listing. When the listing is sorted by
update time, a record changed during the read leaves its place for the end, every record
after that place moves up one position, and the record that stood just past the last page
read lands on that page: the read skips it. Its update time is older than the cursor the
read sets, so no later incremental run reads it either. A hard delete does the same in
any order.

A ``ShiftWatch`` looks at every page of one pass over the listing and says at its end
whether the listing may have moved under it. Two signs count:

- *a change met*: a record version (id, updated_at) newer than the run's start, less
  ``MARGIN``, that no earlier pass of this read met;
- *a total that moved*: the listing's record count (``total_header`` or ``total_path``)
  changed between pages.

Which sign means what depends on the stream's declared ``order``:

- ``updated_at`` (oldest first): a change goes to the end, which the pass reads, so it is
  met. A new record goes to the end as well but moves nothing, so when the total grew by
  exactly the number of versions met, each of them was a new record and the pass stands
  (a change or a delete would make the two differ). Otherwise a change met or a moved
  total means the listing must be read again.
- ``updated_at_desc``: changes and new records go to the front, behind the read, and only
  push records later (read twice, which staging de-duplicates). A hard delete pulls them
  earlier: only a moved total counts.
- ``unknown``: either sign alone.
- ``id`` is never watched: an update keeps its place and a new record comes last.

The source reads the listing again from the first page until a pass stands, at most
``max_rereads`` times, and then raises ``ListingMovedError``: the batches the core has
staged stay, but the stream's cursor is left where it was, so the next run reads the
range again.

``MARGIN`` covers APIs that keep update times to the second (a change in the run's first
second would look older than the run) and a server clock running slightly behind ours.
Versions already met are remembered (only those newer than the run: the changes made
while it runs), so a change seen by one pass does not condemn the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx

from connectors.http.pagination import body
from connectors.records.paths import compile_path
from connectors.rest.streams import (
    NoPagination,
    OffsetPagination,
    PagePagination,
    StreamConfig,
)
from crmsync.errors import ConnectorError, RecordError

log = logging.getLogger("crmsync.rest")

MARGIN = timedelta(seconds=1)

UpdatedAt = Callable[[Any], datetime | None]  # a raw record's updated_at (may raise)
Key = Callable[[Any], str | None]  # a raw record's id (never raises)
Total = Callable[[httpx.Response], int | None]
Pass = Callable[[], Iterator[tuple[httpx.Response, list[Any]]]]  # one read from page one


class ListingMovedError(ConnectorError):
    """Records kept moving under every re-read of a listing, so the stream's read stopped."""


def watch_for(
    config: StreamConfig, until: datetime, updated_at: UpdatedAt, key: Key
) -> ShiftWatch | None:
    """A watch over one read of the stream, or None when its paging cannot skip a record
    (ordered by id) or when the server pages it its own way and no update-time order is
    declared (a cursor or a link is trusted to be stable unless the operator says not)."""
    pagination = config.pagination
    if config.order == "id" or isinstance(pagination, NoPagination):
        return None
    if isinstance(pagination, PagePagination | OffsetPagination):
        total = _total_of(pagination)
    elif config.order == "unknown":
        return None
    else:
        total = None
    return ShiftWatch(config.order, until - MARGIN, updated_at, key, total)


def reread(pages: Pass, watch: ShiftWatch, key: str, max_rereads: int) -> Iterator[list[Any]]:
    """The pages of ``pages()``, read again from the first page until a pass stands.

    Records of every pass are yielded as they come (staging keeps the newest version of
    each), so memory stays flat; giving up raises after them, so the core, which moves a
    stream's cursor only once its read has ended, leaves it where it was. ``key`` is the
    stream's table in the configuration, for the messages.
    """
    while True:
        watch.begin()
        for response, records in pages():
            watch.see(response, records)
            yield records
        moved = watch.verdict()
        if moved is None:
            return
        if watch.passes > max_rereads:
            raise ListingMovedError(
                f"{key}: the listing kept moving under the read ({moved}) on each of "
                f"{watch.passes} reads; what was staged stays, but the stream's cursor was "
                "not moved, so the next run reads the same range again. If the API can sort "
                f'by id, ask for that in {key}.params and set {key}.order = "id"; else raise '
                f"{key}.max_rereads or run when the shop is quieter"
            )
        log.warning(
            "%s: records moved under the read (%s); reading it again from the first page "
            "(re-read %d of at most %d)",
            key,
            moved,
            watch.passes,
            max_rereads,
        )


def _total_of(pagination: PagePagination | OffsetPagination) -> Total | None:
    header, path = pagination.total_header, pagination.total_path
    if not header and not path:
        return None
    getter = compile_path(path) if path else None

    def total(response: httpx.Response) -> int | None:
        value: Any = response.headers.get(header) if header else None
        if value is None and getter is not None:
            value = getter(body(response))
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        return int(value) if isinstance(value, str) and value.strip().isdigit() else None

    return total


class ShiftWatch:
    """Watches the passes of one read of a listing (see the module's docstring)."""

    def __init__(
        self, order: str, mark: datetime, updated_at: UpdatedAt, key: Key, total: Total | None
    ) -> None:
        self._order = order
        self._mark = mark
        self._updated_at = updated_at
        self._key = key
        self._total = total
        self._met: set[tuple[str | None, datetime]] = set()
        self.passes = 0
        self._new = 0
        self._first: int | None = None
        self._last: int | None = None
        self._moved = False

    def begin(self) -> None:
        """A pass starts at the listing's first page."""
        self.passes += 1
        self._new = 0
        self._first = self._last = None
        self._moved = False

    def see(self, response: httpx.Response, records: list[Any]) -> None:
        """One page of the pass, as received."""
        if self._order != "updated_at_desc":
            for raw in records:
                moment = self._moment(raw)
                if moment is not None and moment > self._mark:
                    version = (self._key(raw), moment)
                    if version not in self._met:
                        self._met.add(version)
                        self._new += 1
        total = self._total(response) if self._total is not None else None
        if total is not None:
            if self._first is None:
                self._first = total
            elif total != self._last:
                self._moved = True
            self._last = total

    def verdict(self) -> str | None:
        """None when the pass stands; else what moved, in words for the log and the error."""
        met = f"met {self._new} record(s) changed since the run started"
        moved = f"the total went from {self._first} to {self._last} between pages"
        if self._order == "updated_at":
            if self._first is None or self._last is None:
                return met if self._new else None
            if self._last - self._first == self._new:
                return None  # only new records, each at the end: nothing moved up
            return met if self._new else moved
        if self._order == "updated_at_desc":
            return moved if self._moved else None
        if self._new:
            return met
        return moved if self._moved else None

    def _moment(self, raw: Any) -> datetime | None:
        try:
            return self._updated_at(raw)
        except (RecordError, AttributeError, TypeError):
            return None  # the mapping quarantines it; it says nothing about the listing
