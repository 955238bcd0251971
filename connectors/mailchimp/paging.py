"""Offset pagination as a strategy object, with loop detection.

Mailchimp's collections take ``count`` and ``offset`` and report ``total_items``. The
strategy says where the next page starts, or None when done; asking for the same offset
twice is an error rather than an endless loop (a server that ignores ``offset`` would
otherwise make a consent read-back spin forever).
"""

from __future__ import annotations

from crmsync.errors import ConnectorError


class PaginationLoop(ConnectorError):
    """The server sent the same page position twice."""


class OffsetPages:
    """``next(offset, items_on_page, total) -> next offset | None``."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def next(self, offset: int, items: int, total: int | None) -> int | None:
        if offset in self._seen:
            raise PaginationLoop(f"offset {offset} was requested twice; stopping the pagination")
        self._seen.add(offset)
        if items == 0:
            return None
        following = offset + items
        if total is not None and following >= total:
            return None
        return following
