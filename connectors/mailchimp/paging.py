"""Offset pagination as a strategy object, with loop detection.

Mailchimp's collections take ``count`` and ``offset`` and report ``total_items``. The
strategy says where the next page starts, or None when done. A server that ignores
``offset`` answers every request with the first page again; without a ``total_items``
that would make a consent read-back spin forever, so a page that starts with the same
record as an earlier page is an error. (A page boundary shifted by a record added
during the read repeats the previous page's *last* record, never its first.)
"""

from __future__ import annotations

from collections.abc import Hashable

from crmsync.errors import ConnectorError


class PaginationLoop(ConnectorError):
    """The server sent a page it had already sent."""


class OffsetPages:
    """``next(offset, items_on_page, total, first_record) -> next offset | None``."""

    def __init__(self) -> None:
        self._firsts: set[Hashable] = set()

    def next(
        self, offset: int, items: int, total: int | None, first: Hashable = None
    ) -> int | None:
        if items == 0:
            return None
        if first is not None:
            if first in self._firsts:
                raise PaginationLoop(
                    f"the page at offset {offset} repeats an earlier page; the server seems "
                    "to ignore offset, so the read stops here"
                )
            self._firsts.add(first)
        following = offset + items
        if total is not None and following >= total:
            return None
        return following
