"""Every pagination strategy, driven by bare httpx.Response objects, and loop detection.

The strategies are the HTTP seam's (``connectors.http.pagination``), shared by the REST
source and the vendor clients; the REST source's glue builds them from its config.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from connectors.http.pagination import (
    BodyCursorPaginator,
    LinkHeaderPaginator,
    NextPage,
    NextUrlPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    PaginationLoopError,
    at,
)
from connectors.rest import RestConfig
from connectors.rest.pagination import build_paginator

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
    paginator = PageNumberPaginator(page_size=2, records=at("data", "items"))
    assert paginator.next(page({"data": {"items": [1, 2]}})) == NextPage({"page": "2"})
    assert paginator.next(page({"data": {"items": [3]}})) is None


def test_offset_advances_by_the_records_received() -> None:
    paginator = OffsetPaginator(param="skip", page_size=3)
    assert paginator.first() == {"skip": "0"}
    assert paginator.next(page([1, 2, 3])) == NextPage({"skip": "3"})
    assert paginator.next(page([4, 5, 6])) == NextPage({"skip": "6"})
    assert paginator.next(page([7])) is None


def test_offset_stops_at_the_total_in_the_body() -> None:
    paginator = OffsetPaginator(records=at("rows"), total=at("meta", "total"))
    assert paginator.next(page({"rows": [1, 2], "meta": {"total": 4}})) == NextPage({"offset": "2"})
    assert paginator.next(page({"rows": [3, 4], "meta": {"total": 4}})) is None


def test_cursor_in_the_body_is_sent_back_until_it_is_null() -> None:
    paginator = BodyCursorPaginator(cursor=at("meta", "next_cursor"), param="cursor")
    assert paginator.next(page({"data": [1], "meta": {"next_cursor": "abc"}})) == NextPage(
        {"cursor": "abc"}
    )
    assert paginator.next(page({"data": [2], "meta": {"next_cursor": None}})) is None


def test_cursor_stops_when_has_more_is_false() -> None:
    paginator = BodyCursorPaginator(cursor=at("next"), param="after", has_more=at("has_more"))
    assert paginator.next(page({"next": "c2", "has_more": True})) == NextPage({"after": "c2"})
    assert paginator.next(page({"next": "c3", "has_more": False})) is None


def test_link_header_next_is_followed_and_resolved_against_the_request() -> None:
    paginator = LinkHeaderPaginator()
    linked = page([1], {"Link": '</v1/items?page_info=xyz>; rel="next", </v1/items>; rel="first"'})
    assert paginator.next(linked) == NextPage(url="https://api.example.test/v1/items?page_info=xyz")
    assert paginator.next(page([2], {"Link": '</v1/items>; rel="prev"'})) is None
    assert paginator.next(page([3])) is None


def test_next_url_in_the_body_is_followed_until_null() -> None:
    paginator = NextUrlPaginator(next_url=at("links", "next"))
    following = paginator.next(page({"links": {"next": "https://api.example.test/v1/items?p=2"}}))
    assert following == NextPage(url="https://api.example.test/v1/items?p=2")
    assert paginator.next(page({"links": {"next": None}})) is None


def test_a_repeated_cursor_is_a_loop_error_not_an_endless_read() -> None:
    paginator = BodyCursorPaginator(cursor=at("next"), param="cursor")
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
    paginator = NextUrlPaginator(next_url=at("next"))
    paginator.next(page({"next": "https://api.example.test/v1/items?p=2"}))
    paginator.next(page({"next": "https://api.example.test/v1/items?p=3"}))
    with pytest.raises(PaginationLoopError):
        paginator.next(page({"next": "https://api.example.test/v1/items?p=2"}))


def test_an_offset_the_server_ignores_is_a_loop_error_even_with_fresh_offsets() -> None:
    paginator = OffsetPaginator(page_size=2)  # no total: only the records can tell
    assert paginator.next(page([{"id": 1}, {"id": 2}])) == NextPage({"offset": "2"})
    assert paginator.next(page([{"id": 3}, {"id": 4}])) == NextPage({"offset": "4"})
    with pytest.raises(PaginationLoopError, match="repeats an earlier page"):
        paginator.next(page([{"id": 1}, {"id": 2}]))  # offset=4 answered with the first page


def test_a_page_number_the_server_ignores_is_a_loop_error() -> None:
    paginator = PageNumberPaginator()
    paginator.next(page([{"id": 1}]))
    with pytest.raises(PaginationLoopError, match="page=2 repeats an earlier page"):
        paginator.next(page([{"id": 1}]))


def test_a_page_boundary_shifted_by_a_new_record_is_not_a_loop() -> None:
    paginator = OffsetPaginator(page_size=2)
    assert paginator.next(page([{"id": 1}, {"id": 2}])) == NextPage({"offset": "2"})
    # a record inserted at the front: the next page starts with the previous page's last
    assert paginator.next(page([{"id": 2}, {"id": 3}])) == NextPage({"offset": "4"})


def test_strategies_read_a_decoded_body_when_an_sdk_gives_no_response() -> None:
    paginator = OffsetPaginator(records=at("members"), total=at("total_items"))
    body = {"members": [{"id": "a"}, {"id": "b"}], "total_items": 3}
    assert paginator.next(Page.of_document(body)) == NextPage({"offset": "2"})
    assert paginator.next(Page.of_document({"members": [{"id": "c"}], "total_items": 3})) is None
    assert LinkHeaderPaginator().next(Page.of_document(body)) is None  # no headers, no link


def test_the_rest_glue_compiles_the_streams_paths_into_the_strategy() -> None:
    config = RestConfig.model_validate(
        {
            "kind": "rest",
            "base_url": "https://api.example.test",
            "streams": {
                "customers": {
                    "path": "/v1/customers",
                    "records_path": "data.rows",
                    "pagination": {"type": "offset", "param": "skip", "total_path": "meta.n"},
                    "fields": {"external_id": "id"},
                }
            },
        }
    )
    paginator = build_paginator(config.streams["customers"])
    assert paginator.first() == {"skip": "0"}
    rows = {"data": {"rows": [{"id": 1}, {"id": 2}]}, "meta": {"n": 3}}
    assert paginator.next(page(rows)) == NextPage({"skip": "2"})
    assert paginator.next(page({"data": {"rows": [{"id": 3}]}, "meta": {"n": 3}})) is None
