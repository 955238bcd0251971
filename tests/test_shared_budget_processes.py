"""Issue 15: two workers never exceed a vendor's shared budget (the fake counts the peak).

Separate OS processes (spawned, as Celery's workers on two machines would be, sharing
nothing but Redis) send to the fake Mailchimp through the HTTP seam, each with more
threads than the account allows connections. The fake counts the requests in flight and
the requests that arrived within any span. Through a shared budget the account's limits
hold for all of them together; the same run without it exceeds them, which shows the
fake would see a breach. A process SIGKILLed while it holds every slot gives them back
once its leases run out, and not before.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.http import RateSettings
from connectors.http.budgets import BudgetRegistry
from connectors.http.shared_budget import SharedBudget
from connectors.http.shared_store import SharedStore
from tests.fakes.mailchimp import FakeMailchimp
from tests.shared_budget_workers import CONNECTIONS, Job, hold_every_slot, serve
from tests.shared_redis import RedisForTests, shared_redis

__all__ = ["shared_redis"]

SPAWN = multiprocessing.get_context("spawn")
WORKERS = 2
LEASE = 2.0  # seconds; renewed every third of it while the holder lives

Run = Callable[[Job], None]


@pytest.fixture(scope="module")
def workers() -> Iterator[Run]:
    """Two worker processes for the module (spawning is slow); ``run`` gives both the job
    and checks that both sent at the same time and got every answer."""
    jobs, results, start = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Barrier(WORKERS)
    processes = [SPAWN.Process(target=serve, args=(jobs, results, start)) for _ in range(WORKERS)]
    for process in processes:
        process.start()

    def run(job: Job) -> None:
        for _ in processes:
            jobs.put(job)
        done = [results.get(timeout=120) for _ in processes]
        assert all(status == 200 for _, _, statuses in done for status in statuses)
        # they sent at the same time: each began before the other ended
        assert max(began for began, _, _ in done) < min(ended for _, ended, _ in done)

    yield run
    for _ in processes:
        jobs.put(None)
    for process in processes:
        process.join(30)
        if process.is_alive():
            process.kill()


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    # concurrency is counted, not refused (max_connections far above the key's 10), so the
    # run without a shared budget shows how far it goes; the spec is not the point here
    served = FakeMailchimp(max_connections=100, latency=0.1, validate=False).start()
    try:
        yield served
    finally:
        served.stop()
    assert not served.violations


def job(fake: FakeMailchimp, account: str, shared: str | None, **more: Any) -> Job:
    return Job(fake.base_url, fake.api_key, fake.list_id, account, shared, **more)


def test_two_workers_never_have_more_connections_in_flight_than_the_key_allows(
    shared_redis: RedisForTests, fake: FakeMailchimp, workers: Run
) -> None:
    account = shared_redis.account("mailchimp")
    workers(job(fake, account, shared_redis.url, requests=40, threads=CONNECTIONS + 2))
    assert fake.max_in_flight <= CONNECTIONS
    assert sum(fake.calls.values()) == WORKERS * 40


def test_without_a_shared_budget_two_workers_exceed_the_connections(
    fake: FakeMailchimp, workers: Run
) -> None:
    # eight rounds of ten each, 0.1 s a round: the two overlap by whole rounds even when
    # one starts a few rounds late on a loaded machine (with four rounds, one CI run saw
    # them overlap only where one's last answers met the other's first requests: peak 10)
    workers(job(fake, "mailchimp:own", None, requests=80, threads=CONNECTIONS + 2))
    assert fake.max_in_flight > CONNECTIONS


# five tries in any second (the client's window), counted by the fake over 0.6 s: the
# margin absorbs the time between a try's booked start and its arrival
WINDOW = (5, 1.0)


def test_two_workers_keep_one_rolling_window(
    shared_redis: RedisForTests, fake: FakeMailchimp, workers: Run
) -> None:
    fake.latency = 0.01
    account = shared_redis.account("mailchimp")
    workers(job(fake, account, shared_redis.url, requests=10, threads=5, window=WINDOW))
    assert fake.most_in_window(0.6) <= WINDOW[0]
    assert sum(fake.calls.values()) == WORKERS * 10


def test_without_a_shared_budget_two_workers_break_the_window(
    fake: FakeMailchimp, workers: Run
) -> None:
    fake.latency = 0.01
    workers(job(fake, "mailchimp:own", None, requests=10, threads=5, window=WINDOW))
    assert fake.most_in_window(0.6) > WINDOW[0]


def test_a_killed_workers_slots_come_back_after_the_lease(shared_redis: RedisForTests) -> None:
    account = shared_redis.account("mailchimp")
    held = SPAWN.Event()
    args = (shared_redis.url, account, 3, LEASE, held)
    holder = SPAWN.Process(target=hold_every_slot, args=args)
    holder.start()
    try:
        assert held.wait(60)
        time.sleep(LEASE * 1.5)  # longer than a lease: a live holder renews its slots
        store = SharedStore(shared_redis.url, key="http.rate.shared")
        keys = shared_redis.keys_of(account)
        assert not store.take_slot(keys.slots, "", 3, LEASE, "probe")
        holder.kill()  # SIGKILL: no slot is given back
        holder.join(10)
        killed = time.monotonic()
        rate = RateSettings.model_validate(
            {"max_concurrency": 3, "shared": shared_redis.url, "shared_lease": LEASE}
        )
        budget = BudgetRegistry().get(account, rate)
        assert isinstance(budget, SharedBudget)
        with budget.slot():
            waited = time.monotonic() - killed
    finally:
        if holder.is_alive():
            holder.kill()
    # the slots came back when the lease the holder last renewed ran out, not at once
    assert LEASE / 4 < waited < LEASE + 3.0
