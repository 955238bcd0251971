"""Reading back the e-mail opt-outs made in Klaviyo since the last read, in time windows.

Klaviyo filters profiles on their suppression time and pages them a cursor after another,
so one filter over the whole time since the last read costs as many round trips as it has
pages. The time is therefore cut into windows read side by side (``windows``), and a
window whose first page is full is cut again (``read``): opt-outs come in bursts (a first
sync that unsubscribes 14,800 people writes them all within a minute or two), and
a burst in one window of equal slices would again be read a page after another. A window
cut again has its first page read again within its parts; only a window too short to cut
(under a second a part: filters take whole seconds) follows its cursor.

The windows share their bounds, (a, b] then (b, c], in whole seconds, the last one
open-ended (a suppression made while reading), so together they match exactly what one
filter over the whole time matches. A profile suppressed more than once matches every
window one of its times falls in and then comes more than once; the core records an
opt-out once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.klaviyo.client import KlaviyoApi
from connectors.klaviyo.payloads import klaviyo_time

SUPPRESSED_AT = "subscriptions.email.marketing.suppression.timestamp"
SLICES = 8  # windows a read starts with, and parts a full window is cut into
EVER = "2000-01-01T00:00:00Z"  # a first read's lower bound: any time


def time_after(since: datetime | None) -> str:
    """The time a read-back's filter reads after: ``since``, or any time (a first read)."""
    return klaviyo_time(since) if since is not None else EVER


@dataclass(frozen=True, slots=True)
class Window:
    """Suppressions after ``low`` (None: any time) up to ``high`` (None: no end)."""

    low: datetime | None
    high: datetime | None

    def filter(self) -> str:
        text = f"greater-than({SUPPRESSED_AT},{time_after(self.low)})"
        if self.high is None:
            return text
        return f"{text},less-or-equal({SUPPRESSED_AT},{klaviyo_time(self.high)})"

    def cut(self, parts: int, now: datetime) -> list[Window]:
        """This window in up to ``parts`` windows of whole seconds (open-ended as it is,
        ``now`` standing in for its end); just itself when it is too short to cut."""
        if self.low is None:
            return [self]
        end = self.high if self.high is not None else now
        parts = min(parts, int((end - self.low).total_seconds()))
        if parts < 2:
            return [self]
        step = (end - self.low) / parts
        bounds = [self.low] + [
            (self.low + step * number).replace(microsecond=0) for number in range(1, parts)
        ]
        bounds = list(dict.fromkeys(bounds))  # one each, in order
        cut = [Window(low, high) for low, high in itertools.pairwise(bounds)]
        return [*cut, Window(bounds[-1], self.high)]


def windows(since: datetime | None, now: datetime, slices: int = SLICES) -> list[Window]:
    """The time since ``since`` in ``slices`` windows (one for a first read)."""
    low = since.replace(microsecond=0) if since is not None else None
    return Window(low, None).cut(slices, now)


def read(
    api: KlaviyoApi,
    start: Sequence[Window],
    fields: Sequence[str],
    pool: Executor,
    now: datetime,
) -> Iterator[dict[str, Any]]:
    """The profiles suppressed in ``start``'s windows, with their subscriptions: the
    windows' pages fetched side by side in ``pool``, round after round; a window whose
    first page has a next one is read again as ``SLICES`` parts, unless it is too short
    to cut, when its cursor is followed."""
    known = {window.filter(): window for window in start}

    def split(text: str) -> list[str]:
        parts = known[text].cut(SLICES, now)
        if len(parts) < 2:
            return []
        known.update((part.filter(), part) for part in parts)
        return [part.filter() for part in parts]

    return api.profiles_side_by_side(list(known), fields, pool, split)
