"""Pagination strategies shared by every reader of a paged collection: the REST source and the
vendor clients (Mailchimp's members and tags, Klaviyo's lists).

A strategy reads one page and says where the next one is: ``next(page) -> NextPage | None``,
with the page given as a bare ``httpx.Response`` or, for clients whose SDK hands back only
the decoded body, as ``Page.of_document(body)``. Strategies are single-use: build a fresh
one for every read of a collection.

Every strategy refuses to go round in circles, in the two ways an API can make it:

- the same next page twice (a cursor, link, URL or offset already requested): a server
  that keeps answering with one cursor would otherwise be read for ever;
- for strategies that count records (offset, page number), a page that starts with the
  record an earlier page started with: a server that ignores the offset or page
  parameter sends the first page again under ever new tokens, and without a total that
  never ends. (A page boundary shifted by a record added during the read repeats the
  previous page's *last* record, never its first, so this does not fire on a busy
  collection; only pages of one record cannot tell a shift from a loop.)

Both raise ``PaginationLoopError`` instead of reading on.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import httpx
import orjson

from crmsync.errors import ConnectorError

Getter = Callable[[Any], Any]  # reads one value out of a decoded JSON body


class PaginationLoopError(ConnectorError):
    """The API offered a page that was already read: its pagination is going in circles."""


@dataclass(frozen=True)
class NextPage:
    """Where the next page is: query parameters to merge, or a full URL to follow."""

    params: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None

    def key(self) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        return (self.url, tuple(sorted(self.params.items())))


def at(*keys: str) -> Getter:
    """A getter for the value under these object keys (``at("meta", "total")``); None when
    any step is missing. Richer paths (list indexes, picks) are the caller's own getter."""

    def get(document: Any) -> Any:
        current = document
        for key in keys:
            if not isinstance(current, Mapping):
                return None
            current = current.get(key)
        return current

    return get


def whole(document: Any) -> Any:
    """The getter for a body that is itself the list of records."""
    return document


_BODIES: WeakKeyDictionary[httpx.Response, Any] = WeakKeyDictionary()


def body(response: httpx.Response) -> Any:
    """The decoded JSON body, decoded once per response however many readers ask.

    Raises ``ValueError`` (orjson's decode error) when the body is not JSON.
    """
    try:
        return _BODIES[response]
    except KeyError:
        decoded = orjson.loads(response.content)
        _BODIES[response] = decoded
        return decoded


class Page:
    """One page as a strategy reads it: its decoded body and, when there is a response, its
    headers and links. The body is decoded only when a strategy asks for it, so following a
    Link header never requires a JSON body."""

    __slots__ = ("_document", "_response")

    def __init__(self, response: httpx.Response | None = None, document: Any = None) -> None:
        self._response = response
        self._document = document

    @classmethod
    def of_document(cls, document: Any) -> Page:
        """A page known only by its decoded body (an SDK that returns dicts)."""
        return cls(None, document)

    def document(self) -> Any:
        return body(self._response) if self._response is not None else self._document

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers if self._response is not None else httpx.Headers()

    def link(self, rel: str) -> str | None:
        """The URL of the Link header's relation ``rel`` (RFC 8288), if any."""
        if self._response is None:
            return None
        found = self._response.links.get(rel, {}).get("url")
        return str(found) if found else None

    def absolute(self, link: str) -> str:
        """``link`` resolved against the request that fetched this page, when known."""
        if self._response is None:
            return link
        try:
            return str(self._response.request.url.join(link))
        except RuntimeError:  # a bare Response in a test: keep the link as given
            return link


class Paginator(ABC):
    """Template: subclasses say what is next; this base class refuses repeated pages."""

    def __init__(self) -> None:
        self._seen: set[tuple[str | None, tuple[tuple[str, str], ...]]] = set()
        self._firsts: set[bytes] = set()

    def first(self) -> Mapping[str, str]:
        """Query parameters of the first request (e.g. ``page=1``)."""
        return {}

    def next(self, response: httpx.Response | Page) -> NextPage | None:
        page = response if isinstance(response, Page) else Page(response)
        following = self._next(page)
        if following is None:
            return None
        key = following.key()
        if key in self._seen:
            shown = following.url or dict(following.params)
            raise PaginationLoopError(
                f"the API returned the same next page twice ({shown}); its pagination loops, "
                "so the read stopped. Check the pagination settings."
            )
        self._seen.add(key)
        return following

    @abstractmethod
    def _next(self, page: Page) -> NextPage | None: ...

    def _records(self, page: Page, records: Getter, where: str) -> int:
        """How many records the page holds; refuses a page that starts like an earlier one."""
        found = records(page.document())
        if not isinstance(found, list) or not found:
            return 0
        # a digest, not the record: memory stays small however long the read
        first = hashlib.blake2b(
            orjson.dumps(found[0], option=orjson.OPT_SORT_KEYS, default=str), digest_size=16
        ).digest()
        if first in self._firsts:
            raise PaginationLoopError(
                f"the page at {where} repeats an earlier page; the server seems to ignore "
                "the paging parameter, so the read stops here"
            )
        self._firsts.add(first)
        return len(found)


class PageNumberPaginator(Paginator):
    """``?page=N``: stops on an empty or short page, or at the total-pages header."""

    def __init__(
        self,
        *,
        param: str = "page",
        start: int = 1,
        page_size: int | None = None,
        total_pages_header: str | None = None,
        records: Getter = whole,
    ) -> None:
        super().__init__()
        self._param = param
        self._page = start
        self._page_size = page_size
        self._total_header = total_pages_header
        self._records_of = records
        self._seen.add(NextPage({param: str(start)}).key())

    def first(self) -> Mapping[str, str]:
        return {self._param: str(self._page)}

    def _next(self, page: Page) -> NextPage | None:
        count = self._records(page, self._records_of, f"{self._param}={self._page}")
        if count == 0:
            return None
        if self._page_size is not None and count < self._page_size:
            return None
        if self._total_header:
            total = page.headers.get(self._total_header)
            if total is not None and total.strip().isdigit() and self._page >= int(total):
                return None
        self._page += 1
        return NextPage({self._param: str(self._page)})


class OffsetPaginator(Paginator):
    """``?offset=N``: advances by the records received; stops on an empty or short page, or
    once the offset reaches the total the body states."""

    def __init__(
        self,
        *,
        param: str = "offset",
        page_size: int | None = None,
        total: Getter | None = None,
        records: Getter = whole,
    ) -> None:
        super().__init__()
        self._param = param
        self._offset = 0
        self._page_size = page_size
        self._total = total
        self._records_of = records
        self._seen.add(NextPage({param: "0"}).key())

    def first(self) -> Mapping[str, str]:
        return {self._param: "0"}

    def _next(self, page: Page) -> NextPage | None:
        count = self._records(page, self._records_of, f"{self._param}={self._offset}")
        if count == 0 or (self._page_size is not None and count < self._page_size):
            return None
        self._offset += count
        if self._total is not None:
            total = self._total(page.document())
            if isinstance(total, int | str) and str(total).isdigit() and self._offset >= int(total):
                return None
        return NextPage({self._param: str(self._offset)})


class BodyCursorPaginator(Paginator):
    """A cursor in the body (``meta.next_cursor``) sent back as a query parameter."""

    def __init__(self, *, cursor: Getter, param: str, has_more: Getter | None = None) -> None:
        super().__init__()
        self._cursor = cursor
        self._param = param
        self._has_more = has_more

    def _next(self, page: Page) -> NextPage | None:
        document = page.document()
        if self._has_more is not None and not self._has_more(document):
            return None
        cursor = self._cursor(document)
        if cursor is None or cursor == "":
            return None
        return NextPage({self._param: str(cursor)})


class LinkHeaderPaginator(Paginator):
    """RFC 8288 ``Link: <...>; rel="next"``, as GitHub, Shopify and WordPress send it."""

    def __init__(self, *, rel: str = "next") -> None:
        super().__init__()
        self._rel = rel

    def _next(self, page: Page) -> NextPage | None:
        link = page.link(self._rel)
        return NextPage(url=page.absolute(link)) if link else None


class NextUrlPaginator(Paginator):
    """A next-page URL in the body (``links.next``, ``paging.next``); null at the end."""

    def __init__(self, *, next_url: Getter) -> None:
        super().__init__()
        self._next_url = next_url

    def _next(self, page: Page) -> NextPage | None:
        link = self._next_url(page.document())
        if not link or not isinstance(link, str):
            return None
        return NextPage(url=page.absolute(link))


class SinglePage(Paginator):
    """No pagination: the whole collection comes in one response."""

    def _next(self, page: Page) -> NextPage | None:
        return None
