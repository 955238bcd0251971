"""A kept daily allowance under concurrency: every try counts from its booking until its
answer is read, an answer read late never gives calls back, and a try refused with 429
gives its call back, so no interleaving of tries and answers spends the reserve."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx
import pytest

from connectors.http import AccountBudget, BudgetRegistry, HttpClient, HttpSettings, RateSettings
from connectors.http.budget import Booking, DailyAllowance, QuotaSpent
from crmsync.errors import TransientError

FOREVER = 1e12  # the vendor's day never ends in these tests
DAILY = "X-HubSpot-RateLimit-Daily-Remaining"


def kept(reserve: int, left: int) -> DailyAllowance:
    allowance = DailyAllowance()
    allowance.keep(reserve, FOREVER)
    allowance.observe(left, None)
    return allowance


def answer(allowance: DailyAllowance, booking: Booking, left: int | None) -> None:
    allowance.settle(booking)
    if left is not None:
        allowance.observe(left, booking)


def test_a_try_booked_and_still_waiting_counts_when_another_answer_is_read() -> None:
    allowance = kept(reserve=0, left=3)
    waiting = allowance.book("x", 0.0)  # booked, then waiting for the window: not sent yet
    sent = allowance.book("x", 0.0)
    answer(allowance, sent, left=2)  # HubSpot counted this one only
    assert allowance.left() == 1  # the waiting try will be counted too
    allowance.book("x", 0.0)
    with pytest.raises(QuotaSpent):
        allowance.book("x", 0.0)  # three tries for three calls: a fourth would be refused
    assert waiting.open


def test_an_answer_read_late_never_gives_back_calls_spent_since() -> None:
    allowance = kept(reserve=0, left=10)
    first, second = allowance.book("x", 0.0), allowance.book("x", 0.0)
    # HubSpot counts the first (9 left), then the second (8 left); the second's answer
    # is read first and the first's only after
    answer(allowance, second, left=8)
    answer(allowance, first, left=9)
    assert allowance.left() is not None and allowance.left() <= 8
    third = allowance.book("x", 0.0)
    answer(allowance, third, left=7)
    assert allowance.left() == 7  # a lone try: the count is exact again


def test_a_try_refused_with_429_gives_its_call_back_for_its_retry() -> None:
    allowance = kept(reserve=10, left=11)  # one call above the reserve
    refused = allowance.book("x", 0.0)
    allowance.settle(refused, refused=True)  # 429 TEN_SECONDLY: HubSpot did not count it
    retry = allowance.book("x", 0.0)  # not booked twice: the call is still there
    answer(allowance, retry, left=10)
    with pytest.raises(QuotaSpent) as caught:
        allowance.book("x", 0.0)
    assert "10 left" in str(caught.value)


def test_a_try_that_failed_without_an_answer_counts_as_received() -> None:
    allowance = kept(reserve=0, left=5)
    dropped = allowance.book("x", 0.0)
    allowance.settle(dropped)  # the connection dropped: HubSpot may have counted it
    assert allowance.left() == 4


def test_the_count_is_forgotten_when_the_day_ends_and_stale_answers_are_ignored() -> None:
    allowance = DailyAllowance()
    allowance.keep(0, ends=100.0)
    allowance.observe(5, None)
    yesterday = allowance.book("x", 50.0)
    allowance.new_day(100.0)
    assert allowance.left() is None
    allowance.keep(0, ends=200.0)
    answer(allowance, yesterday, left=1)  # an answer to a try of the old day
    assert allowance.left() is None
    today = allowance.book("x", 150.0)
    answer(allowance, today, left=999)
    assert allowance.left() == 999


@dataclass
class Try:
    booking: Booking
    received: bool = False
    left: int | None = None  # what the vendor answered; None: refused (429)


@pytest.mark.parametrize("seed", range(40))
def test_no_interleaving_of_tries_and_answers_spends_the_reserve(seed: int) -> None:
    """A vendor with a daily limit, up to eight tries under way, each booked, received
    by the vendor (or refused with 429) and answered in a random order."""
    rng = random.Random(seed)
    limit, reserve = 60, 7
    received = rng.randrange(0, 10)  # calls other apps spent before the run
    allowance = kept(reserve, left=limit - received)
    open_tries: list[Try] = []
    spent = False
    while not spent or open_tries:
        moves = []
        if not spent and len(open_tries) < 8:
            moves.append("book")
        if any(not t.received for t in open_tries):
            moves.append("receive")
        if any(t.received for t in open_tries):
            moves.append("answer")
        move = rng.choice(moves)
        if move == "book":
            try:
                open_tries.append(Try(allowance.book("x", 0.0)))
            except QuotaSpent:
                spent = True
        elif move == "receive":
            chosen = rng.choice([t for t in open_tries if not t.received])
            chosen.received = True
            if rng.random() < 0.1:  # the rolling window is full: refused, not counted
                chosen.left = None
            else:
                received += 1
                chosen.left = limit - received
        else:
            chosen = rng.choice([t for t in open_tries if t.received])
            open_tries.remove(chosen)
            allowance.settle(chosen.booking, refused=chosen.left is None)
            if chosen.left is not None:
                allowance.observe(chosen.left, chosen.booking)
        known = allowance.left()
        assert known is None or known <= limit - received  # never more than there is
        assert received <= limit - reserve
    assert received >= limit - reserve - 8  # careful by at most the tries under way


def test_a_429_through_the_client_does_not_spend_the_call_its_retry_needs() -> None:
    answers = iter(
        [
            httpx.Response(200, headers={DAILY: "11"}),
            httpx.Response(429, headers={"Retry-After": "1"}),  # refused: not counted
            httpx.Response(200, headers={DAILY: "10"}),
        ]
    )
    settings = HttpSettings(base_url="https://api.example.test", rate=RateSettings())
    client = HttpClient(
        settings,
        account="daily",
        transport=httpx.MockTransport(lambda request: next(answers)),
        sleep=lambda s: None,
        budgets=BudgetRegistry(sleep=lambda s: None),
    )
    client.budget.keep_daily(reserve=10, day_ends_in=3600)
    client.get("/first")
    client.get("/second")  # refused once, then answered: the retry found its call
    assert client.budget.daily_left() == 10
    with pytest.raises(TransientError, match="spent"):
        client.get("/third")
    client.close()


def test_a_booked_try_counts_until_its_own_thread_reads_its_answer() -> None:
    budget = AccountBudget("t", RateSettings())
    budget.keep_daily(reserve=0, day_ends_in=3600)
    budget.observe(httpx.Response(200, headers={DAILY: "2"}))
    budget.acquire()
    with pytest.raises(OSError), budget.slot():
        raise OSError("connection reset")  # failed in its slot: may have been received
    assert budget.daily_left() == 1
    budget.acquire()
    with pytest.raises(QuotaSpent):
        budget.acquire()  # the second try, answered or not, is spent too
