"""The shared rate budget on the real Redis: each script, and the budget against the
in-process one it must behave like.

Most tests drive a ``SharedBudget`` and an ``AccountBudget`` through the same steps on
fake clocks and compare what they waited, what they counted and what they refused: the
shared budget must keep the very rules the per-process one keeps (tested on its own in
test_http_budget.py and test_daily_allowance.py), only for every process at once. Two
budgets from two registries stand for two processes: they share nothing but Redis.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from connectors.http import HttpClient, HttpOptions, HttpSettings, RateSettings
from connectors.http.budget import AccountBudget, Budget, QuotaSpent
from connectors.http.budgets import BudgetRegistry
from connectors.http.shared_budget import SharedBudget
from connectors.http.shared_store import SharedStore, Window
from connectors.hubspot.client import HubSpotApi
from connectors.hubspot.config import HubSpotConfig
from connectors.klaviyo.client import KlaviyoApi
from connectors.klaviyo.config import GROUPS, KlaviyoConfig
from connectors.mailchimp import MailchimpConfig
from crmsync.errors import ConfigError
from tests.fakes import FakeClock
from tests.shared_redis import RedisForTests, shared_redis
from tests.test_fixed_window import answer as told
from tests.test_fixed_window import read_lists_in_turns

__all__ = ["shared_redis"]

BASE = "https://api.example.test"
DAILY = "X-HubSpot-RateLimit-Daily-Remaining"


def both(redis: RedisForTests, rate: RateSettings) -> Iterator[tuple[str, Budget, FakeClock]]:
    """The in-process budget and the shared one, each on a fake clock of its own."""
    local_clock = FakeClock()
    yield "local", AccountBudget("a", rate, clock=local_clock, sleep=local_clock.sleep), local_clock
    shared_clock = FakeClock()
    shared = RateSettings.model_validate({**rate.model_dump(), "shared": redis.url})
    registry = BudgetRegistry(clock=shared_clock, sleep=shared_clock.sleep)
    yield "shared", registry.get(redis.account(), shared), shared_clock


def same_trace(
    redis: RedisForTests, rate: RateSettings, steps: Callable[[Budget, FakeClock], list[Any]]
) -> list[Any]:
    traces = {name: steps(budget, clock) for name, budget, clock in both(redis, rate)}
    assert traces["shared"] == traces["local"]
    return traces["shared"]


# -- the bucket, the window, the pause ---------------------------------------------------


def test_the_bucket_allows_a_burst_then_spaces_tries_as_the_local_one(
    shared_redis: RedisForTests,
) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        for _ in range(5):
            budget.acquire()
        clock.advance(100.0)  # refills, never beyond the burst
        for _ in range(4):
            budget.acquire()
        return clock.sleeps

    sleeps = same_trace(shared_redis, RateSettings(requests_per_second=2.0, burst=3), steps)
    assert sleeps == pytest.approx([0.5, 0.5, 0.5])


def test_the_rolling_window_books_starts_as_the_local_one(shared_redis: RedisForTests) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.keep_window(3, 10.0)
        waits = [budget.acquire() for _ in range(7)]
        clock.advance(25.0)
        waits += [budget.acquire() for _ in range(4)]
        return waits

    waits = same_trace(shared_redis, RateSettings(), steps)
    assert waits[:7] == pytest.approx([0, 0, 0, 10, 0, 0, 10])


def test_two_rolling_windows_book_starts_as_the_local_ones(shared_redis: RedisForTests) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.keep_window(2, 1.0)
        budget.keep_window(3, 10.0)
        waits = [budget.acquire() for _ in range(7)]
        budget.keep_window(2, 10.0)  # the same length again: resized, not added
        clock.advance(100.0)
        waits += [budget.acquire() for _ in range(3)]
        return waits

    waits = same_trace(shared_redis, RateSettings(), steps)
    assert waits == pytest.approx([0, 0, 1, 9, 0, 1, 9, 0, 0, 10])


def test_a_pause_holds_every_try_and_is_never_shortened(shared_redis: RedisForTests) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.pause(5.0)
        budget.pause(1.0)  # shorter: changes nothing
        budget.acquire()
        budget.pause(1_000.0)  # capped at MAX_PAUSE
        budget.acquire()
        exhausted = httpx.Response(
            200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"}
        )
        budget.observe(exhausted)
        budget.acquire()
        return clock.sleeps

    assert same_trace(shared_redis, RateSettings(), steps) == pytest.approx([5.0, 300.0, 7.0])


def test_a_pause_one_process_takes_holds_the_others(shared_redis: RedisForTests) -> None:
    clock = FakeClock()
    account, rate = shared_redis.account(), RateSettings(shared=shared_redis.url)
    first = BudgetRegistry(clock=clock, sleep=clock.sleep).get(account, rate)
    second = BudgetRegistry(clock=clock, sleep=clock.sleep).get(account, rate)
    assert first is not second
    first.pause(4.0)  # a 429's Retry-After, in one process
    assert second.acquire() == pytest.approx(4.0)


def test_two_processes_draw_from_one_bucket_and_one_window(shared_redis: RedisForTests) -> None:
    clock = FakeClock()
    account = shared_redis.account()
    rate = RateSettings(requests_per_second=1.0, burst=2, shared=shared_redis.url)
    budgets = [BudgetRegistry(clock=clock, sleep=clock.sleep).get(account, rate) for _ in "ab"]
    for budget in budgets:
        budget.keep_window(3, 10.0)
    waits = [budgets[i % 2].acquire() for i in range(4)]
    # the third try waits for a token (the bucket holds two), the fourth for the window
    # of three, which the first opened at 1000: it starts at 1010
    assert waits == pytest.approx([0.0, 0.0, 1.0, 9.0])
    assert clock.now == pytest.approx(1010.0)


# -- a fixed window learned from the vendor's answers (Klaviyo's minute) ------------------


def test_a_fixed_window_is_learned_and_filled_as_the_local_one(
    shared_redis: RedisForTests,
) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.keep_window(10, 1.0)  # a burst window beside it stays rolling
        budget.keep_fixed_window(3, 60.0, 0.25)
        clock.advance(40.0)  # three calls 40 s into the vendor's minute
        waits = [budget.acquire() for _ in range(3)]
        budget.observe(told("75", 70, 1))  # another window's state: nothing learned
        budget.observe(told("3", 0, 20, status=429))  # a refusal: nothing learned
        budget.observe(told("3", 1, 80_000))  # a day's window of the same size
        budget.observe(told("3", 0, 20))  # the minute ends at 1060
        waits += [budget.acquire() for _ in range(4)]  # 1060.25 (three), then 1120.25
        budget.observe(told("3", 2, 59))  # its first answer: 1179.25, not 1180
        budget.observe(told("3", 1, 58))  # the earliest an answer puts it at: 1178.25
        clock.advance(57.0)  # 1177.25: closer than 1.25 s to the end, so the next window
        waits += [budget.acquire() for _ in range(2)]
        return [*waits, clock()]

    trace = same_trace(shared_redis, RateSettings(), steps)
    assert trace[:7] == pytest.approx([0, 0, 0, 20.25, 0, 0, 60.0])
    assert trace[7:] == pytest.approx([1.25, 0.0, 1178.5])


def test_the_vendors_remaining_count_is_taken_in_as_the_local_one(
    shared_redis: RedisForTests,
) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.keep_fixed_window(5, 60.0, 0.25)
        budget.acquire()
        budget.observe(told("5", 2, 30))  # someone else made two calls this minute
        return [budget.acquire() for _ in range(3)]

    assert same_trace(shared_redis, RateSettings(), steps) == pytest.approx([0.0, 0.0, 30.25])


def test_an_extrapolated_window_is_moved_by_its_first_answer_as_the_local_one(
    shared_redis: RedisForTests,
) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        budget.keep_fixed_window(10, 60.0, 0.25)
        budget.acquire()
        budget.observe(told("10", 9, 30))  # ends at 1030
        clock.advance(29.0)
        waits = [budget.acquire()]  # too close: placed at 1030.25, the window ends at 1090
        clock.advance(1.25)  # 1031.5: the vendor's own clock says 60 s more, not 58.5
        budget.observe(told("10", 9, 60))  # moved to 1090.5: a second of rounding at most
        clock.advance(57.5)  # 1089: before 1090.5 - 1.25 (not before 1090 - 1.25)
        waits.append(budget.acquire())
        return [*waits, clock()]

    assert same_trace(shared_redis, RateSettings(), steps) == pytest.approx([1.25, 0.0, 1089.0])


def test_a_window_one_process_learned_places_the_others_calls(
    shared_redis: RedisForTests,
) -> None:
    clock = FakeClock(start=1040.0)
    account = shared_redis.account()
    rate = RateSettings(shared=shared_redis.url)
    registries = [BudgetRegistry(clock=clock, sleep=clock.sleep) for _ in "ab"]
    first, second = (registry.get(account, rate) for registry in registries)
    for budget in (first, second):
        budget.keep_fixed_window(4, 60.0, 0.25)
    assert [first.acquire(), second.acquire()] == [0.0, 0.0]
    first.observe(told("4", 2, 20))  # the vendor counts both: two left until 1060
    waits = [second.acquire(), first.acquire(), second.acquire()]
    assert waits == pytest.approx([0.0, 0.0, 20.25])  # the fifth in the next window
    fixed = shared_redis.client.hgetall(shared_redis.keys_of(account).fixed(60.0))
    assert float(fixed["end"]) == pytest.approx(1120.0) and fixed["used"] == "1"


def test_two_klaviyo_clients_fill_each_minute_of_the_fake_without_a_refusal(
    shared_redis: RedisForTests,
) -> None:
    # two processes on one clock take turns and end where one process does (1,320.25:
    # 0.25 s after the second reset of the fake's minute); kept rolling, at 1,365.5
    ended, refused = read_lists_in_turns(2, shared_redis.url, shared_redis.accounts)
    assert refused == 0
    assert ended == pytest.approx(1320.25)


# -- concurrency slots as leases ----------------------------------------------------------


def test_slots_are_leases_that_run_out_unless_renewed(shared_redis: RedisForTests) -> None:
    store = SharedStore(shared_redis.url, key="http.rate.shared")
    keys = shared_redis.keys_of(shared_redis.account())
    assert [store.take_slot(keys.slots, "100", 2, 1.0, m) for m in "abc"] == [True, True, False]
    assert store.renew_slots(keys.slots, "100.8", 1.0, ["a"]) == 1  # a: until 101.8; b: 101
    assert store.take_slot(keys.slots, "101.5", 2, 1.0, "c")  # b ran out
    assert not store.take_slot(keys.slots, "101.6", 2, 1.0, "d")  # a, c held
    assert store.renew_slots(keys.slots, "101.6", 1.0, ["b"]) == 0  # b is gone for good
    assert store.give_slot(keys, 2, "a")
    assert not store.give_slot(keys, 2, "a")  # given once
    assert shared_redis.client.llen(keys.bell) == 1  # the bell rang for a waiting process
    assert store.take_slot(keys.slots, "101.7", 2, 1.0, "d")


def test_a_thread_waits_for_a_slot_another_process_gives_back(
    shared_redis: RedisForTests,
) -> None:
    account = shared_redis.account()
    rate = RateSettings(max_concurrency=1, shared=shared_redis.url)
    holder = BudgetRegistry().get(account, rate)
    waiter = BudgetRegistry().get(account, rate)
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.slot():
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert entered.wait(5)
    times: list[float] = []

    def wait_for_slot() -> None:
        with waiter.slot():
            times.append(time.monotonic())

    second = threading.Thread(target=wait_for_slot)
    second.start()
    time.sleep(0.6)
    assert times == []  # the only slot is held elsewhere
    given = time.monotonic()
    release.set()
    thread.join(5)
    second.join(5)
    assert times and times[0] >= given


def test_a_slot_given_back_wakes_a_waiting_process_at_once(shared_redis: RedisForTests) -> None:
    store = SharedStore(shared_redis.url, key="http.rate.shared")
    keys = shared_redis.keys_of(shared_redis.account())
    assert store.take_slot(keys.slots, "", 1, 30.0, "holder")
    woke: list[float] = []
    waiting = threading.Thread(
        target=lambda: (store.wait_bell(keys.bell, 5.0), woke.append(time.monotonic()))
    )
    waiting.start()
    time.sleep(0.2)
    given = time.monotonic()
    assert store.give_slot(keys, 1, "holder")
    waiting.join(6)
    assert woke and woke[0] - given < 2.5  # the bell, not the five-second timeout


# -- the daily allowance ------------------------------------------------------------------


class Actor:
    """A thread of its own running the steps given to it: tries stay booked per thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self._results: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._results.put((True, job()))
            except Exception as exc:
                self._results.put((False, exc))

    def __call__(self, job: Callable[[], Any]) -> Any:
        self._jobs.put(job)
        ok, value = self._results.get(timeout=10)
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(5)


def answer(left: int, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={DAILY: str(left)})


def test_the_daily_allowance_is_counted_as_the_local_one(shared_redis: RedisForTests) -> None:
    def steps(budget: Budget, clock: FakeClock) -> list[Any]:
        a, b, c = Actor(), Actor(), Actor()
        trace: list[Any] = []
        budget.keep_daily(reserve=5, day_ends_in=100.0)
        trace.append(budget.daily_left())  # unknown until an answer says
        a(budget.acquire)
        b(budget.acquire)
        b(lambda: budget.observe(answer(20)))
        trace.append(budget.daily_left())  # a's try may still reach the vendor
        a(lambda: budget.observe(answer(21)))  # older, read late: sets nothing
        trace.append(budget.daily_left())
        c(budget.acquire)
        c(lambda: budget.observe(answer(19, status=429)))  # refused: its call comes back
        trace.append(budget.daily_left())
        spent = 0
        try:
            for left in range(18, 0, -1):
                a(budget.acquire)
                a(lambda left=left: budget.observe(answer(left)))
                spent += 1
        except QuotaSpent as exc:
            trace += [spent, str(exc).partition(": ")[2], exc.retry_after]
        clock.advance(150.0)  # the vendor's day ended; a later run keeps the new one
        budget.keep_daily(reserve=5, day_ends_in=86_400.0)
        trace.append(budget.daily_left())  # unknown again: yesterday's count is gone
        a(budget.acquire)  # and no longer stops a try
        a(lambda: budget.observe(answer(999)))
        trace.append(budget.daily_left())
        for actor in (a, b, c):
            actor.stop()
        return trace

    trace = same_trace(shared_redis, RateSettings(), steps)
    assert trace[0] is None and trace[-2] is None
    assert trace[1:4] == [19, 19, 19]
    assert trace[-1] == 999


def test_a_spent_day_stops_every_process(shared_redis: RedisForTests) -> None:
    clock = FakeClock()
    account, rate = shared_redis.account(), RateSettings(shared=shared_redis.url)
    first = BudgetRegistry(clock=clock, sleep=clock.sleep).get(account, rate)
    second = BudgetRegistry(clock=clock, sleep=clock.sleep).get(account, rate)
    for budget in (first, second):
        budget.keep_daily(reserve=10, day_ends_in=600.0)
    first.acquire()
    first.observe(answer(11))
    assert second.daily_left() == 11
    second.acquire()
    second.observe(answer(10))
    with pytest.raises(QuotaSpent, match="10 left, 10 kept in reserve") as raised:
        first.acquire()
    assert raised.value.retry_after == pytest.approx(600.0)


# -- configuration and errors -------------------------------------------------------------


def test_an_account_with_a_shared_url_gets_a_shared_budget_and_others_their_own(
    shared_redis: RedisForTests,
) -> None:
    registry = BudgetRegistry()
    account = shared_redis.account()
    assert isinstance(registry.get(account, RateSettings()), AccountBudget)
    shared = registry.get(account, RateSettings(shared=shared_redis.url))
    assert isinstance(shared, SharedBudget)
    assert registry.get(account, RateSettings(shared=shared_redis.url)) is shared
    registry.share(shared_redis.url, key="celery.shared_budget")  # the process-wide default
    assert isinstance(registry.get(shared_redis.account(), RateSettings()), SharedBudget)
    registry.share(None, key="celery.shared_budget")
    assert isinstance(registry.get(shared_redis.account(), RateSettings()), AccountBudget)


def test_redis_keys_name_no_account_and_no_key(shared_redis: RedisForTests) -> None:
    secret = "0123456789abcdef0123456789abcdef-us7"
    account = shared_redis.account(prefix=secret)
    budget = BudgetRegistry(sleep=lambda s: None).get(
        account, RateSettings(requests_per_second=5.0, shared=shared_redis.url)
    )
    budget.keep_window(5, 1.0)
    budget.keep_daily(0, 60.0)
    budget.acquire()
    with budget.slot():
        written = list(shared_redis.client.scan_iter(match="crmsync:budget:*"))
    mine = [k for k in written if k.startswith(shared_redis.keys_of(account).bucket[:-6])]
    assert len(mine) >= 4  # bucket, window, slots, daily
    assert not [k for k in written if secret in k or account in k]


def test_the_shared_url_of_each_vendor_reaches_its_budgets() -> None:
    url = "redis://redis.internal:6379/1"
    table = {"http": {"rate": {"shared": url, "shared_lease": 12}}}
    mailchimp = MailchimpConfig.model_validate(
        {"kind": "mailchimp", "api_key": "f" * 32 + "-us7", "list_id": "l1", **table}
    )
    klaviyo = KlaviyoConfig.model_validate({"kind": "klaviyo", "api_key": "pk_x", **table})
    hubspot = HubSpotConfig.model_validate({"kind": "hubspot", "access_token": "pat-x", **table})
    rates = [mailchimp.http_settings().rate, hubspot.http_settings().rate]
    rates += [klaviyo.http_settings(group).rate for group in GROUPS]
    for rate in rates:
        assert rate.shared is not None and rate.shared.get_secret_value() == url
        assert rate.shared_lease == 12


def test_klaviyo_keeps_each_groups_windows_in_the_shared_budget(
    shared_redis: RedisForTests,
) -> None:
    config = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": "pk_x", "http": {"rate": {"shared": shared_redis.url}}}
    )
    api = KlaviyoApi(config, budgets=BudgetRegistry(sleep=lambda s: None))
    for group in GROUPS:
        budget = api._clients[group].budget
        shared_redis.accounts.append(budget.account)
        assert isinstance(budget, SharedBudget)
        limit = getattr(config.rate_limits, group)
        assert budget._windows == {1.1: limit.burst, 60.25: limit.steady}
        assert budget._fixed == {60.25: Window(limit.steady, 60.25, 60.0, 0.25)}
    api.close()


def test_hubspot_keeps_its_window_and_day_in_the_shared_budget(
    shared_redis: RedisForTests,
) -> None:
    config = HubSpotConfig.model_validate(
        {
            "kind": "hubspot",
            "access_token": "pat-eu1-x",
            "http": {"rate": {"shared": shared_redis.url}},
        }
    )
    api = HubSpotApi(config, budgets=BudgetRegistry(sleep=lambda s: None))
    budget = api._client.budget
    shared_redis.accounts.append(budget.account)
    assert isinstance(budget, SharedBudget)
    assert budget._windows == {10.25: config.rate_limits.per_ten_seconds}
    ends = shared_redis.client.hget(shared_redis.keys_of(budget.account).daily, "ends")
    assert ends is not None  # the day kept, in Redis, for every process
    api.close()


def test_a_shared_url_must_be_redis() -> None:
    with pytest.raises(ValidationError) as raised:
        HttpOptions.model_validate({"rate": {"shared": "http://127.0.0.1:6379/1"}})
    error = raised.value.errors()[0]
    assert error["loc"] == ("rate", "shared")
    assert "Redis URL" in error["msg"]


OUT_OF_REACH = "redis://:hunter2secret@127.0.0.1:1/0"  # nothing listens on port 1


def test_redis_out_of_reach_stops_a_client_at_start_naming_the_key() -> None:
    settings = HttpSettings(base_url=BASE, rate=RateSettings(shared=OUT_OF_REACH))
    assert "hunter2secret" not in repr(settings)
    with pytest.raises(ConfigError) as raised:
        HttpClient(settings, account="shop:1", budgets=BudgetRegistry(sleep=lambda s: None))
    issue = raised.value.issues[0]
    assert issue.key == "http.rate.shared"
    assert "redis://:***@127.0.0.1:1/0" in issue.message
    assert "hunter2secret" not in str(raised.value)


class LostRedis(BudgetRegistry):
    """A registry whose shared budgets were reached at start, and then Redis went away."""

    def get(self, account: str, rate: RateSettings) -> Budget:
        return SharedBudget(account, rate, SharedStore(OUT_OF_REACH, key="http.rate.shared"))


def test_redis_lost_during_a_run_stops_the_request_before_it_is_sent() -> None:
    settings = HttpSettings(base_url=BASE, rate=RateSettings(shared=OUT_OF_REACH))
    client = HttpClient(settings, account="shop:1", budgets=LostRedis(sleep=lambda s: None))
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        route = mock.get("/x").respond(200)
        with pytest.raises(ConfigError) as raised:
            client.get("/x")
    assert not route.called  # nothing sent without the budget, and no retry of it
    assert raised.value.issues[0].key == "http.rate.shared"
    assert "hunter2secret" not in str(raised.value)
    client.close()


def test_a_process_wide_default_names_its_own_key() -> None:
    registry = BudgetRegistry(sleep=lambda s: None)
    registry.share("redis://127.0.0.1:1/0", key="celery.shared_budget")
    with pytest.raises(ConfigError) as raised:
        registry.get("shop:2", RateSettings())
    assert raised.value.issues[0].key == "celery.shared_budget"


def _use_inherited(budget: Budget) -> None:
    with budget.slot():
        pass


def test_a_forked_child_takes_slots_of_its_own(shared_redis: RedisForTests) -> None:
    """A process pool that forks (the engine's planning workers) inherits the registry:
    the child takes and gives back slots itself, and never renews its parent's."""
    import multiprocessing

    account = shared_redis.account()
    rate = RateSettings.model_validate({"max_concurrency": 2, "shared": shared_redis.url})
    budget = BudgetRegistry().get(account, rate)
    with budget.slot():  # the parent holds one (its renewing thread is running)
        child = multiprocessing.get_context("fork").Process(target=_use_inherited, args=(budget,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        holders = shared_redis.client.zrange(shared_redis.keys_of(account).slots, 0, -1)
    assert len(holders) == 1  # the parent's; the child gave its own back
