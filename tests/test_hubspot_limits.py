"""HubSpot's rate limits: the seam reads its headers (the rolling 10-second window and the
day's calls left), a run stops before the day's calls are spent, saying when HubSpot's
day ends, and no retry spends a call the day no longer has."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import httpx
import pytest

from connectors.http import BudgetRegistry, RateSettings
from connectors.http.budget import AccountBudget, QuotaSpent
from connectors.http.classify import daily_remaining, rate_limit_spacing
from connectors.hubspot import HubSpotConfig, HubSpotDestination
from connectors.hubspot.client import DailyLimitReached
from connectors.hubspot.config import RateLimits
from crmsync.contract import Change, Outcome
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.test_hubspot_destination import CONTEXT, UPSERT, person, specs

__all__ = ["hubspot_fake"]

HUBSPOT_HEADERS = {
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    "X-HubSpot-RateLimit-Max": "100",
    "X-HubSpot-RateLimit-Remaining": "0",
    "X-HubSpot-RateLimit-Daily": "250000",
    "X-HubSpot-RateLimit-Daily-Remaining": "12",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget(clock: Clock) -> AccountBudget:
    return AccountBudget("hubspot:x", RateSettings(), clock=clock, sleep=clock.sleep)


def test_the_seam_reads_hubspots_window_and_daily_headers() -> None:
    response = httpx.Response(200, headers=HUBSPOT_HEADERS)
    assert rate_limit_spacing(response) == pytest.approx(0.1)  # 10 s over 100 slots
    assert daily_remaining(response) == 12
    assert rate_limit_spacing(httpx.Response(200)) is None
    assert daily_remaining(httpx.Response(200, headers={"X-RateLimit-Remaining": "3"})) is None


def test_a_full_rolling_window_pauses_the_account_for_one_slot() -> None:
    clock = Clock()
    account = budget(clock)
    account.observe(httpx.Response(200, headers=HUBSPOT_HEADERS))
    account.acquire()
    assert clock.slept == [pytest.approx(0.1)]
    account.observe(
        httpx.Response(200, headers={**HUBSPOT_HEADERS, "X-HubSpot-RateLimit-Remaining": "7"})
    )
    account.acquire()
    assert len(clock.slept) == 1  # slots left: no pause


def test_a_kept_daily_allowance_stops_tries_at_the_reserve_until_the_day_ends() -> None:
    clock = Clock()
    account = budget(clock)
    account.observe(httpx.Response(200, headers=HUBSPOT_HEADERS))
    account.acquire()  # not kept: the header changes nothing
    account.keep_daily(reserve=10, day_ends_in=3600)
    account.observe(httpx.Response(200, headers={"X-HubSpot-RateLimit-Daily-Remaining": "12"}))
    account.acquire()
    account.acquire()
    with pytest.raises(QuotaSpent) as caught:
        account.acquire()
    assert caught.value.retry_after == pytest.approx(3600)
    assert account.daily_left() == 10
    clock.now += 3600  # HubSpot's day ends: the calls left are unknown again
    account.acquire()
    assert account.daily_left() is None


def test_the_day_ends_at_midnight_in_the_accounts_time_zone() -> None:
    limits = RateLimits(time_zone="Europe/Istanbul")
    ends = limits.day_ends(datetime(2026, 3, 1, 22, 30, tzinfo=UTC))  # 01:30 on 2 March there
    assert ends.astimezone(UTC) == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        RateLimits(time_zone="Mars/Olympus")


class LateAnswers(httpx.BaseTransport):
    """Real HTTP to the fake, but every ``every``-th answer is read ``late`` seconds after
    HubSpot gave it: by then answers to calls HubSpot counted later have been read."""

    def __init__(self, every: int, late: float) -> None:
        self._inner = httpx.HTTPTransport()
        self._every, self._late = every, late
        self._count = itertools.count(1)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if next(self._count) % self._every == 0:
            response.read()
            time.sleep(self._late)
        return response

    def close(self) -> None:
        self._inner.close()


def make(
    fake: FakeHubSpot,
    concurrency: int | None = None,
    pace: float | None = None,
    transport: httpx.BaseTransport | None = None,
    **limits: object,
) -> HubSpotDestination:
    """A destination on the fake; ``pace``: requests a second, each try waiting for its
    token after it took its daily call (really sleeping, so that tries booked and still
    waiting overlap with answers being read)."""
    rate: dict[str, object] = {}
    if concurrency is not None:
        rate["max_concurrency"] = concurrency
    if pace is not None:
        rate.update(requests_per_second=pace, burst=1)
    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "batch_size": 10,
            "rate_limits": {"time_zone": "Europe/Istanbul", **limits},
            "http": {"retry": {"backoff_initial": 0.0, "backoff_max": 0.0}, "rate": rate},
        }
    )
    budgets = BudgetRegistry(sleep=time.sleep if pace is not None else lambda s: None)
    return HubSpotDestination(
        config, CONTEXT, sleep=lambda s: None, budgets=budgets, transport=transport
    )


def push_until_the_day_is_spent(
    destination: HubSpotDestination, people: list[Change], batch: int
) -> tuple[list[Outcome], DailyLimitReached]:
    """Pushes batch after batch until HubSpot's destination says the day is spent."""
    outcomes: list[Outcome] = []
    with pytest.raises(DailyLimitReached) as caught:
        for start in range(0, len(people), batch):
            outcomes += [r.outcome for r in destination.push(people[start : start + batch])]
    return outcomes, caught.value


@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_a_run_stops_before_the_days_reserve_and_says_when_it_can_go_on(
    hubspot_fake: FakeHubSpot, concurrency: int
) -> None:
    hubspot_fake.daily = 120
    late = LateAnswers(every=3, late=0.03)  # answers read out of the order HubSpot counted
    destination = make(hubspot_fake, concurrency, pace=400, transport=late, daily_reserve=25)
    destination.prepare(specs())  # a dozen calls: the day's count is known from here on
    spent_before = hubspot_fake._day_count
    people = [person(f"p{i}@example.com") for i in range(1200)]
    outcomes, error = push_until_the_day_is_spent(destination, people, 10 * concurrency)
    destination.close()
    message = str(error)
    assert "daily_reserve" in message and "Europe/Istanbul" in message and "UTC" in message
    assert error.retry_after is not None and 0 < error.retry_after <= 86_400
    assert hubspot_fake._day_count <= 120 - 25  # the reserve is never spent
    assert hubspot_fake.rate_limited == 0  # stopped before HubSpot had to say 429
    assert hubspot_fake._day_count > spent_before  # it did send what the day allowed
    assert Outcome.OK in outcomes
    assert set(outcomes) <= {Outcome.OK, Outcome.NOT_SENT}  # nobody failed for want of calls


def test_a_daily_429_is_not_retried(hubspot_fake: FakeHubSpot) -> None:
    destination = make(hubspot_fake, daily_reserve=0)
    destination.prepare(specs())
    hubspot_fake.reset_counters()
    hubspot_fake._day_count = hubspot_fake.daily  # other apps spent the day
    [result] = destination.push([person("a@example.com")])
    assert result.outcome is Outcome.NOT_SENT and "429" in result.message
    with pytest.raises(DailyLimitReached, match="429"):
        destination.push([person("b@example.com")])  # nothing more is tried today
    destination.close()
    assert hubspot_fake.calls[UPSERT] == 1  # one refused try, no retries


def test_a_kept_window_lets_size_tries_through_then_one_as_each_ages_out() -> None:
    clock = Clock()
    account = budget(clock)
    account.keep_window(3, 10.0)
    for _ in range(3):
        account.acquire()
    assert clock.slept == []  # the whole window at once, unlike a token bucket
    account.acquire()
    assert clock.slept == [pytest.approx(10.0)]
    account.acquire()
    account.acquire()
    assert clock.slept == [pytest.approx(10.0)]  # the other two aged out at the same time
    account.acquire()
    assert clock.slept[-1] == pytest.approx(10.0)
