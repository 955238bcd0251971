"""Every pagination strategy, driven by bare httpx.Response objects, and loop detection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors.rest import (
    BodyCursorPaginator,
    LinkHeaderPaginator,
    NextPage,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PaginationLoopError,
)

URL = "https://api.example.test/v1/items"


def page(json: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, json=json, headers=headers, request=httpx.Request("GET", URL))


def test_page_number_advances_until_a_short_page() -> None:
    paginator = PageNumberPaginator(param="p", start=1, page_size=2)
    assert paginator.first() == {"p": "1"}
    assert paginator.next(page([1, 2])) == NextPage({"p": "2"})
    assert paginator.next(page([3, 4])) == NextPage({"p": "3"})
    assert paginator.next(page([5])) is None


def test_page_number_stops_on_an_empty_page_when_the_size_is_unknown() -> None:
    paginator = PageNumberPaginator()
    assert paginator.next(page([1])) == NextPage({"page": "2"})
    assert paginator.next(page([])) is None


def test_page_number_stops_at_the_total_pages_header() -> None:
    paginator = PageNumberPaginator(page_size=2, total_pages_header="X-WP-TotalPages")
    assert paginator.next(page([1, 2], {"X-WP-TotalPages": "2"})) == NextPage({"page": "2"})
    assert paginator.next(page([3, 4], {"X-WP-TotalPages": "2"})) is None


def test_page_number_reads_records_under_a_records_path() -> None:
    paginator = PageNumberPaginator(page_size=2, records_path="data.items")
    assert paginator.next(page({"data": {"items": [1, 2]}})) == NextPage({"page": "2"})
    assert paginator.next(page({"data": {"items": [3]}})) is None


def test_offset_advances_by_the_records_received() -> None:
    paginator = OffsetPaginator(param="skip", page_size=3)
    assert paginator.first() == {"skip": "0"}
    assert paginator.next(page([1, 2, 3])) == NextPage({"skip": "3"})
    assert paginator.next(page([4, 5, 6])) == NextPage({"skip": "6"})
    assert paginator.next(page([7])) is None


def test_offset_stops_at_the_total_in_the_body() -> None:
    paginator = OffsetPaginator(records_path="rows", total_path="meta.total")
    assert paginator.next(page({"rows": [1, 2], "meta": {"total": 4}})) == NextPage({"offset": "2"})
    assert paginator.next(page({"rows": [3, 4], "meta": {"total": 4}})) is None


def test_cursor_in_the_body_is_sent_back_until_it_is_null() -> None:
    paginator = BodyCursorPaginator(cursor_path="meta.next_cursor", param="cursor")
    assert paginator.next(page({"data": [1], "meta": {"next_cursor": "abc"}})) == NextPage(
        {"cursor": "abc"}
    )
    assert paginator.next(page({"data": [2], "meta": {"next_cursor": None}})) is None


def test_cursor_stops_when_has_more_is_false() -> None:
    paginator = BodyCursorPaginator(cursor_path="next", param="after", has_more_path="has_more")
    assert paginator.next(page({"next": "c2", "has_more": True})) == NextPage({"after": "c2"})
    assert paginator.next(page({"next": "c3", "has_more": False})) is None


def test_link_header_next_is_followed_and_resolved_against_the_request() -> None:
    paginator = LinkHeaderPaginator()
    linked = page([1], {"Link": '</v1/items?page_info=xyz>; rel="next", </v1/items>; rel="first"'})
    assert paginator.next(linked) == NextPage(url="https://api.example.test/v1/items?page_info=xyz")
    assert paginator.next(page([2], {"Link": '</v1/items>; rel="prev"'})) is None
    assert paginator.next(page([3])) is None


def test_next_url_in_the_body_is_followed_until_null() -> None:
    paginator = NextUrlPaginator(next_url_path="links.next")
    following = paginator.next(page({"links": {"next": "https://api.example.test/v1/items?p=2"}}))
    assert following == NextPage(url="https://api.example.test/v1/items?p=2")
    assert paginator.next(page({"links": {"next": None}})) is None


def test_a_repeated_cursor_is_a_loop_error_not_an_endless_read() -> None:
    paginator = BodyCursorPaginator(cursor_path="next", param="cursor")
    paginator.next(page({"next": "same"}))
    with pytest.raises(PaginationLoopError, match="same next page twice"):
        paginator.next(page({"next": "same"}))


def test_a_repeated_next_link_is_a_loop_error() -> None:
    paginator = LinkHeaderPaginator()
    linked = page([1], {"Link": '<https://api.example.test/v1/items?page=2>; rel="next"'})
    paginator.next(linked)
    with pytest.raises(PaginationLoopError):
        paginator.next(linked)


def test_a_next_url_pointing_back_to_the_first_page_is_a_loop_error() -> None:
    paginator = NextUrlPaginator(next_url_path="next")
    paginator.next(page({"next": "https://api.example.test/v1/items?p=2"}))
    paginator.next(page({"next": "https://api.example.test/v1/items?p=3"}))
    with pytest.raises(PaginationLoopError):
        paginator.next(page({"next": "https://api.example.test/v1/items?p=2"}))
