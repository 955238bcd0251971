"""A vendor's fixed rate window (Klaviyo's steady minute), kept from its answers' headers.

Kept as a rolling window, a minute whose first calls came late in it holds the next
minute's calls back until a whole minute after the first; kept as the vendor's fixed
window, they start as soon as the vendor's window resets, and never overfill it."""

from __future__ import annotations

import httpx
import pytest

from connectors.http import AccountBudget, BudgetRegistry, RateSettings
from connectors.http.classify import rate_limit_limit
from connectors.http.fixed_window import FixedWindow
from connectors.klaviyo import KlaviyoConfig
from connectors.klaviyo.client import KlaviyoApi
from tests.fakes import FakeClock
from tests.fakes.klaviyo import FakeKlaviyo


def answer(limit: str, remaining: int, reset: int, status: int = 200) -> httpx.Response:
    headers = {
        "RateLimit-Limit": limit,
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
    }
    return httpx.Response(status, headers=headers)


def budget_of(clock: FakeClock, size: int = 3) -> AccountBudget:
    budget = AccountBudget("a", RateSettings(), clock=clock, sleep=clock.sleep)
    budget.keep_fixed_window(size, 60.0, 0.25)
    return budget


def test_the_window_size_is_read_from_either_form_of_the_limit_header() -> None:
    assert rate_limit_limit(httpx.Response(200, headers={"RateLimit-Limit": "750"})) == 750
    both = httpx.Response(200, headers={"RateLimit-Limit": "750, 75;w=1, 750;w=60"})
    assert rate_limit_limit(both) == 750
    assert rate_limit_limit(httpx.Response(200, headers={"X-RateLimit-Limit": "n/a"})) is None
    assert rate_limit_limit(httpx.Response(200)) is None


def test_until_an_answer_tells_the_reset_the_window_is_kept_rolling() -> None:
    clock = FakeClock(start=1000.0)
    budget = budget_of(clock)
    waits = [budget.acquire() for _ in range(4)]
    assert waits == [0.0, 0.0, 0.0, pytest.approx(60.25)]  # a whole minute after the first


def test_once_told_the_next_window_opens_at_the_vendors_reset() -> None:
    # three calls 40 s into the vendor's minute: the fourth goes 20 s later, at its reset
    # (plus the margin), where a rolling window would hold it 60 s
    clock = FakeClock(start=1040.0)
    budget = budget_of(clock)
    for _ in range(3):
        assert budget.acquire() == 0.0
    budget.observe(answer("3", 0, 20))  # the window ends at 1060
    waits = [budget.acquire() for _ in range(4)]
    assert clock() == pytest.approx(1060.25 + 60.0)
    assert waits == [pytest.approx(20.25), 0.0, 0.0, pytest.approx(60.0)]


def test_the_vendors_remaining_count_includes_other_clients_calls() -> None:
    clock = FakeClock(start=1000.0)
    budget = budget_of(clock, size=5)
    budget.acquire()
    budget.observe(answer("5", 2, 30))  # someone else made two calls this minute
    assert [budget.acquire() for _ in range(2)] == [0.0, 0.0]
    assert budget.acquire() == pytest.approx(30.25)


def test_an_answer_about_another_window_teaches_nothing() -> None:
    clock = FakeClock(start=1000.0)
    budget = budget_of(clock)
    for _ in range(3):
        budget.acquire()
    budget.observe(answer("75", 70, 1))  # the burst window's state: not this one's
    budget.observe(answer("3", 1, 80_000))  # a day's window of the same size
    budget.observe(answer("3", 0, 20, status=429))  # a refusal says nothing of the window
    assert budget.acquire() == pytest.approx(60.25)  # still rolling


def test_no_call_starts_in_the_second_before_a_reset() -> None:
    # the reset is told in whole seconds: the true end may be up to a second earlier, and
    # a call must reach the vendor before it
    window = FixedWindow(10, 60.0, 0.25)
    window.learn(now=100.0, reset=30.0, remaining=None, starts=[])
    assert window.place(128.0) == 128.0
    assert window.place(128.9) == pytest.approx(130.25)  # moved to the next window
    assert window.used == 1 and window.end == pytest.approx(190.0)


def test_answers_narrow_the_end_and_late_ones_of_an_old_window_are_ignored() -> None:
    window = FixedWindow(10, 60.0, 0.25)
    window.learn(now=100.0, reset=31.0, remaining=None, starts=[99.0, 100.0])
    assert window.end == 131.0 and window.used == 2
    window.learn(now=100.6, reset=30.0, remaining=9, starts=[])
    assert window.end == pytest.approx(130.6)  # the earliest an answer put it at
    assert window.place(129.5) == pytest.approx(130.85)  # too close to the end: the next one
    assert window.end == pytest.approx(190.6) and window.used == 1
    window.learn(now=130.0, reset=1.0, remaining=0, starts=[])  # a late answer of the old one
    window.learn(now=200.0, reset=50.0, remaining=0, starts=[])  # and one of a later one
    assert window.end == pytest.approx(190.6) and window.used == 1


def test_each_window_is_set_again_by_its_own_first_answer() -> None:
    # the vendor's clock runs a little slow against ours: extrapolated, the next window's
    # end would be early; its first answer puts it where the vendor says
    for first_answer, end in ((131.0, 190.0), (131.5, 190.5)):
        window = FixedWindow(10, 60.0, 0.25)
        window.learn(now=100.0, reset=30.0, remaining=None, starts=[])
        assert window.place(129.0) == pytest.approx(130.25)
        assert window.end == pytest.approx(190.0)
        # 191 or 191.5 at most: the first within its second of rounding, the second not
        window.learn(now=first_answer, reset=60.0, remaining=None, starts=[])
        assert window.end == pytest.approx(end)
        window.learn(now=first_answer + 1.0, reset=59.0, remaining=None, starts=[])
        assert window.end == pytest.approx(end)  # later answers of the window narrow it only


def read_lists_in_turns(
    processes: int, shared: str | None = None, accounts: list[str] | None = None
) -> tuple[float, int]:
    """12 list reads at 5 a minute against the fake on one clock, the first 45 s into
    its minute, taken in turns by ``processes`` clients (each with a registry of its
    own: a process; ``shared``: their Redis budget, the accounts it keeps added to
    ``accounts``); when the last read ended and how many the fake refused."""
    clock = FakeClock(start=1245.0)
    fake = FakeKlaviyo(clock=clock).start()
    apis: list[KlaviyoApi] = []
    try:
        fake.set_rate_limit("GET", "/api/lists", burst=10, steady=5)
        settings: dict[str, object] = {
            "kind": "klaviyo",
            "api_key": fake.api_key,
            "base_url": fake.base_url,
            "rate_limits": {"lists": {"burst": 10, "steady": 5}},
        }
        if shared is not None:
            settings["http"] = {"rate": {"shared": shared}}
        config = KlaviyoConfig.model_validate(settings)
        for _ in range(processes):
            budgets = BudgetRegistry(clock=clock, sleep=clock.sleep)
            apis.append(KlaviyoApi(config, sleep=clock.sleep, budgets=budgets))
        if accounts is not None:
            accounts.extend(client.budget.account for client in apis[0]._clients.values())
        for i in range(12):
            assert apis[i % processes].send("lists", "GET", "/api/lists").status_code == 200
        return clock(), fake.rate_limited
    finally:
        for api in apis:
            api.close()
        fake.stop()


def test_the_klaviyo_client_fills_each_minute_of_the_fake_without_a_refusal() -> None:
    # the fake counts Klaviyo's fixed minutes on the same clock; its answers tell the
    # client where they reset. Kept rolling the reads would take until 1,245 + 2 x 60.25;
    # kept fixed, the third block starts 0.25 s after the second minute boundary
    ended, refused = read_lists_in_turns(1)
    assert refused == 0
    assert ended == pytest.approx(1320.25)
