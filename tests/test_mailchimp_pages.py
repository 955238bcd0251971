"""Several Mailchimp collections read side by side (``MailchimpApi._concurrent_pages``): the
members of each opted-out status in a consent read-back.

Each collection's first page tells its total; its later pages are asked for as soon as
that page is in, not once every collection's first page is, and no more than
``PAGES_AT_ONCE`` pages are fetched or on the way at any time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connectors.mailchimp import client
from connectors.mailchimp.client import PAGE, MailchimpApi

WAIT = 10.0


def collection(name: str, total: int, asked: list[tuple[str, int]]) -> Callable[[int], Any]:
    def fetch(offset: int) -> dict[str, Any]:
        asked.append((name, offset))
        items = [{"id": f"{name}{n}"} for n in range(offset, min(offset + PAGE, total))]
        return {"members": items, "total_items": total}

    return fetch


def test_a_collections_later_pages_do_not_wait_for_another_ones_first_page() -> None:
    asked: list[tuple[str, int]] = []
    large = collection("u", 3 * PAGE, asked)
    second_page_asked = threading.Event()
    held: list[bool] = []

    def large_and_tell(offset: int) -> Any:
        if offset == PAGE:
            second_page_asked.set()
        return large(offset)

    def slow_first_page(offset: int) -> Any:
        held.append(second_page_asked.wait(WAIT))  # in vain when the later pages wait
        return {"members": [{"id": "c0"}], "total_items": 1}

    with ThreadPoolExecutor(4) as pool:
        read = list(
            MailchimpApi._concurrent_pages("members", [large_and_tell, slow_first_page], pool)
        )
    assert held == [True]
    assert sorted(item["id"] for _, item in read) == sorted(
        [f"u{n}" for n in range(3 * PAGE)] + ["c0"]
    )
    # each collection's items once, a collection's pages yielded in their order
    assert [item["id"] for index, item in read if index == 0] == [f"u{n}" for n in range(3 * PAGE)]


def test_no_more_than_pages_at_once_are_fetched_or_on_the_way(monkeypatch: Any) -> None:
    monkeypatch.setattr(client, "PAGES_AT_ONCE", 3)
    asked: list[tuple[str, int]] = []
    fetch = collection("u", 12 * PAGE, asked)
    with ThreadPoolExecutor(8) as pool:
        read = MailchimpApi._concurrent_pages("members", [fetch], pool)
        taken = [next(read) for _ in range(PAGE + 1)]  # the first page, the second's first item
        assert len(taken) == PAGE + 1
        # the first page, then three in the window; taking the second freed a place for one
        deadline = time.monotonic() + WAIT
        while len(asked) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # and no other page is asked for meanwhile
        assert sorted(offset for _, offset in asked) == [n * PAGE for n in range(5)]
        rest = list(read)
    assert len(taken) + len(rest) == 12 * PAGE
    assert sorted(offset for _, offset in asked) == [n * PAGE for n in range(12)]
