"""Pagination strategies: small objects that read a page's response and say what comes next.

Each strategy answers ``next(response) -> NextPage | None`` and is testable with a bare
``httpx.Response``. The base class refuses to hand out the same page twice: a server that
keeps answering with the same cursor or next link would otherwise loop for ever, so that
raises ``PaginationLoopError`` naming the repeated token instead.

Strategies are single-use: the source builds a fresh one for every stream read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import httpx
import orjson

from connectors.rest.config import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PagePagination,
    StreamConfig,
)
from connectors.rest.paths import Getter, compile_path
from crmsync.errors import ConnectorError


class PaginationLoopError(ConnectorError):
    """The API offered a page that was already read: its pagination is going in circles."""


@dataclass(frozen=True)
class NextPage:
    """Where the next page is: query parameters to merge, or a full URL to follow."""

    params: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None

    def key(self) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        return (self.url, tuple(sorted(self.params.items())))


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


def records_of(response: httpx.Response, records: Getter) -> list[Any]:
    found = records(body(response))
    return found if isinstance(found, list) else []


class Paginator(ABC):
    """Template: subclasses say what is next; this base class detects loops."""

    def __init__(self) -> None:
        self._seen: set[tuple[str | None, tuple[tuple[str, str], ...]]] = set()

    def first(self) -> Mapping[str, str]:
        """Query parameters of the first request (e.g. ``page=1``)."""
        return {}

    def next(self, response: httpx.Response) -> NextPage | None:
        following = self._next(response)
        if following is None:
            return None
        key = following.key()
        if key in self._seen:
            shown = following.url or dict(following.params)
            raise PaginationLoopError(
                f"the API returned the same next page twice ({shown}); its pagination loops, "
                "so the read stopped. Check the stream's pagination settings."
            )
        self._seen.add(key)
        return following

    @abstractmethod
    def _next(self, response: httpx.Response) -> NextPage | None: ...


class PageNumberPaginator(Paginator):
    """``?page=N``: stops on an empty or short page, or at the total-pages header."""

    def __init__(
        self,
        *,
        param: str = "page",
        start: int = 1,
        page_size: int | None = None,
        total_pages_header: str | None = None,
        records_path: str = "",
    ) -> None:
        super().__init__()
        self._param = param
        self._page = start
        self._page_size = page_size
        self._total_header = total_pages_header
        self._records = compile_path(records_path)
        self._seen.add(NextPage({param: str(start)}).key())

    def first(self) -> Mapping[str, str]:
        return {self._param: str(self._page)}

    def _next(self, response: httpx.Response) -> NextPage | None:
        count = len(records_of(response, self._records))
        if count == 0:
            return None
        if self._page_size is not None and count < self._page_size:
            return None
        if self._total_header:
            total = response.headers.get(self._total_header)
            if total is not None and total.strip().isdigit() and self._page >= int(total):
                return None
        self._page += 1
        return NextPage({self._param: str(self._page)})


class OffsetPaginator(Paginator):
    """``?offset=N``: advances by the records received; stops on an empty or short page."""

    def __init__(
        self,
        *,
        param: str = "offset",
        page_size: int | None = None,
        total_path: str | None = None,
        records_path: str = "",
    ) -> None:
        super().__init__()
        self._param = param
        self._offset = 0
        self._page_size = page_size
        self._total = compile_path(total_path) if total_path else None
        self._records = compile_path(records_path)
        self._seen.add(NextPage({param: "0"}).key())

    def first(self) -> Mapping[str, str]:
        return {self._param: "0"}

    def _next(self, response: httpx.Response) -> NextPage | None:
        count = len(records_of(response, self._records))
        if count == 0 or (self._page_size is not None and count < self._page_size):
            return None
        self._offset += count
        if self._total is not None:
            total = self._total(body(response))
            if isinstance(total, int | str) and str(total).isdigit() and self._offset >= int(total):
                return None
        return NextPage({self._param: str(self._offset)})


class BodyCursorPaginator(Paginator):
    """A cursor in the body (``meta.next_cursor``) sent back as a query parameter."""

    def __init__(self, *, cursor_path: str, param: str, has_more_path: str | None = None) -> None:
        super().__init__()
        self._cursor = compile_path(cursor_path)
        self._param = param
        self._has_more = compile_path(has_more_path) if has_more_path else None

    def _next(self, response: httpx.Response) -> NextPage | None:
        document = body(response)
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

    def _next(self, response: httpx.Response) -> NextPage | None:
        link = response.links.get(self._rel, {}).get("url")
        if not link:
            return None
        return NextPage(url=_absolute(response, link))


class NextUrlPaginator(Paginator):
    """A next-page URL in the body (``links.next``, ``paging.next``); null at the end."""

    def __init__(self, *, next_url_path: str) -> None:
        super().__init__()
        self._next_url = compile_path(next_url_path)

    def _next(self, response: httpx.Response) -> NextPage | None:
        link = self._next_url(body(response))
        if not link or not isinstance(link, str):
            return None
        return NextPage(url=_absolute(response, link))


class SinglePage(Paginator):
    """No pagination: the whole collection comes in one response."""

    def _next(self, response: httpx.Response) -> NextPage | None:
        return None


def _absolute(response: httpx.Response, link: str) -> str:
    try:
        return str(response.request.url.join(link))
    except RuntimeError:  # a bare Response in a test: keep the link as given
        return link


def build_paginator(config: StreamConfig) -> Paginator:
    """A fresh strategy for one read of one stream, from its ``pagination`` table."""
    pagination = config.pagination
    size = config.page_size if config.page_size_param else None
    match pagination:
        case PagePagination():
            return PageNumberPaginator(
                param=pagination.param,
                start=pagination.start,
                page_size=size,
                total_pages_header=pagination.total_pages_header,
                records_path=config.records_path,
            )
        case OffsetPagination():
            return OffsetPaginator(
                param=pagination.param,
                page_size=size,
                total_path=pagination.total_path,
                records_path=config.records_path,
            )
        case CursorPagination():
            return BodyCursorPaginator(
                cursor_path=pagination.cursor_path,
                param=pagination.param,
                has_more_path=pagination.has_more_path,
            )
        case LinkHeaderPagination():
            return LinkHeaderPaginator(rel=pagination.rel)
        case NextUrlPagination():
            return NextUrlPaginator(next_url_path=pagination.next_url_path)
        case _:
            return SinglePage()
