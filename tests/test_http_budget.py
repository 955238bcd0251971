"""The per-account rate budget: token bucket, concurrency limit, header-driven pauses."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import respx

from connectors.http import (
    AccountBudget,
    BudgetRegistry,
    HttpClient,
    HttpSettings,
    RateSettings,
    TokenBucket,
)
from tests.fakes import FakeClock

BASE = "https://api.example.test"


def test_bucket_allows_a_burst_then_spaces_requests_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 3, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve() for _ in range(5)]
    assert waits == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_bucket_refills_over_time_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 2, clock=clock, sleep=clock.sleep)
    assert [bucket.reserve() for _ in range(2)] == [0.0, 0.0]
    clock.advance(100.0)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 1.0]


def test_acquire_sleeps_for_the_missing_token() -> None:
    clock = FakeClock()
    budget = AccountBudget(
        "a", RateSettings(requests_per_second=4.0, burst=1), clock=clock, sleep=clock.sleep
    )
    budget.acquire()
    budget.acquire()
    assert clock.sleeps == [0.25]


def test_unlimited_rate_never_waits() -> None:
    clock = FakeClock()
    budget = AccountBudget("a", RateSettings(), clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        budget.acquire()
    assert clock.sleeps == []


def test_clients_of_the_same_account_share_one_budget() -> None:
    clock = FakeClock()
    registry = BudgetRegistry(clock=clock, sleep=clock.sleep)
    settings = HttpSettings(base_url=BASE, rate=RateSettings(requests_per_second=1.0, burst=1))
    first = HttpClient(settings, account="shop-1", sleep=clock.sleep, budgets=registry)
    second = HttpClient(settings, account="shop-1", sleep=clock.sleep, budgets=registry)
    other = HttpClient(settings, account="shop-2", sleep=clock.sleep, budgets=registry)
    assert first.budget is second.budget
    assert first.budget is not other.budget
    with respx.mock(base_url=BASE) as mock:
        mock.get("/x").respond(200)
        first.get("/x")
        other.get("/x")  # another account: its own full bucket
        assert clock.sleeps == []
        second.get("/x")  # same account: waits for the token the first one took
    assert clock.sleeps == [1.0]


def test_exhausted_rate_limit_headers_pause_the_account_before_the_next_request() -> None:
    clock = FakeClock()
    registry = BudgetRegistry(clock=clock, sleep=clock.sleep)
    client = HttpClient(
        HttpSettings(base_url=BASE), account="hdr", sleep=clock.sleep, budgets=registry
    )
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/x").mock(
            side_effect=[
                httpx.Response(200, headers={"X-RateLimit-Remaining": "5"}),
                httpx.Response(
                    200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "9"}
                ),
                httpx.Response(200),
            ]
        )
        client.get("/x")
        client.get("/x")
        assert clock.sleeps == []
        client.get("/x")
    assert route.call_count == 3
    assert clock.sleeps == [9.0]


def test_a_429_pauses_every_client_of_the_account() -> None:
    clock = FakeClock()
    registry = BudgetRegistry(clock=clock, sleep=clock.sleep)
    settings = HttpSettings(base_url=BASE)
    limited = HttpClient(settings, account="shared", sleep=clock.sleep, budgets=registry)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/x").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "5"}), httpx.Response(200)]
        )
        limited.get("/x")
    budget = registry.get("shared", settings.rate)
    clock.now -= 5.0  # as if another thread asked right after the 429
    budget.acquire()
    assert clock.sleeps == [5.0, 5.0]


def test_concurrency_limit_holds_a_third_request_until_a_slot_frees() -> None:
    budget = AccountBudget("c", RateSettings(max_concurrency=2))
    entered = threading.Event()

    def third() -> None:
        with budget.slot():
            entered.set()

    with budget.slot():
        worker = threading.Thread(target=third)
        with budget.slot():
            worker.start()
            assert not entered.wait(0.2)  # both slots are taken: it must not get in
        assert entered.wait(10)  # one slot freed: now it does
    worker.join(10)


def test_concurrent_requests_through_the_client_never_exceed_the_limit() -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    both_in = threading.Barrier(2, timeout=10)

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        both_in.wait()  # proves two run at once; a third would be counted above
        with lock:
            in_flight -= 1
        return httpx.Response(200)

    settings = HttpSettings(base_url=BASE, rate=RateSettings(max_concurrency=2))
    client = HttpClient(
        settings,
        account="conc",
        transport=httpx.MockTransport(handler),
        budgets=BudgetRegistry(),
    )
    threads = [threading.Thread(target=client.get, args=("/x",)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak == 2


def test_a_window_counts_requests_as_they_leave_not_as_they_queue_for_a_slot() -> None:
    # the vendor counts arrivals: a request booked in a window, then held by a slow answer
    # to another one for the only connection, must not arrive beside the next window's
    # (booked before taking the slot: B at 0 s arrives at 0.6 s, C and D at 1.0 s)
    arrivals: list[float] = []
    first_in = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            first_in.set()
            time.sleep(0.6)  # a slow answer holds the connection
        return httpx.Response(200)

    settings = HttpSettings(base_url=BASE, rate=RateSettings(max_concurrency=1))
    client = HttpClient(
        settings, account="w", transport=httpx.MockTransport(handler), budgets=BudgetRegistry()
    )
    client.budget.keep_window(2, 1.0)
    first = threading.Thread(target=client.get, args=("/a",))
    first.start()
    assert first_in.wait(10)
    rest = [threading.Thread(target=client.get, args=(f"/{name}",)) for name in "bcd"]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(30)
    assert len(arrivals) == 4
    # the vendor's window, a little shorter than the kept one (its margin): never three
    assert all(arrivals[i + 2] - arrivals[i] >= 0.9 for i in range(2))


def test_two_kept_windows_hold_together_and_each_on_its_own() -> None:
    # at most 2 tries in any second and 3 in any 10 seconds: the one-second window holds
    # the third try, the ten-second one the fourth; the fifth goes with the fourth
    clock = FakeClock()
    budget = AccountBudget("a", RateSettings(), clock=clock, sleep=clock.sleep)
    budget.keep_window(2, 1.0)
    budget.keep_window(3, 10.0)
    waits = [budget.acquire() for _ in range(7)]
    assert waits == [0.0, 0.0, 1.0, 9.0, 0.0, 1.0, 9.0]
    budget.keep_window(2, 10.0)  # the same length again: resized, not added
    clock.advance(100.0)
    assert [budget.acquire() for _ in range(3)] == [0.0, 0.0, 10.0]


def test_kept_windows_let_a_long_run_go_at_the_steady_rate_itself() -> None:
    # Klaviyo's import job group: 10 a second, 150 a minute. Kept as windows, 1,084 tries
    # go in blocks of 150 a minute (their last one starts after 7 minutes and 3 seconds,
    # plus the margins); a token bucket that never overfills the minute would take the
    # 1,074 after its burst at 140 a minute, 460 s
    clock = FakeClock()
    budget = AccountBudget("a", RateSettings(), clock=clock, sleep=clock.sleep)
    started = clock()
    budget.keep_window(10, 1.1)
    budget.keep_window(150, 60.25)
    for _ in range(1_084):
        budget.acquire()
    assert clock() - started == pytest.approx(7 * 60.25 + 3 * 1.1)
