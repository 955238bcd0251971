"""What the worker processes of tests/test_shared_budget_processes.py run, in a module of
its own that imports only the HTTP seam, so a spawned process starts quickly.

A worker serves jobs until it is sent None: each job builds a client (a budget registry
of its own, as a separate machine would have), waits for the other workers at the
barrier, sends its requests from a pool of threads and puts back when it began, when it
ended and the statuses it got.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import httpx

from connectors.http import HttpClient, HttpOptions, RateSettings
from connectors.http.budgets import BudgetRegistry

CONNECTIONS = 10  # Mailchimp's simultaneous connections per key


@dataclass(frozen=True)
class Job:
    base_url: str
    api_key: str
    list_id: str
    account: str
    shared: str | None  # the shared budget's URL; None: each process keeps its own
    requests: int
    threads: int
    window: tuple[int, float] | None = None  # a rolling window kept: (size, seconds)


def send(job: Job) -> tuple[float, float, list[int]]:
    table: dict[str, Any] = {"retry": {"backoff_initial": 0.01, "backoff_max": 0.05}}
    table["rate"] = {"shared": job.shared} if job.shared else {}
    settings = HttpOptions.model_validate(table).settings(job.base_url, max_concurrency=CONNECTIONS)
    auth = httpx.BasicAuth("crmsync", job.api_key)
    with HttpClient(settings, account=job.account, auth=auth, budgets=BudgetRegistry()) as client:
        if job.window is not None:
            client.budget.keep_window(*job.window)
        path = f"/lists/{job.list_id}"
        began = time.monotonic()  # CLOCK_MONOTONIC: one clock for the machine's processes
        with ThreadPoolExecutor(job.threads) as pool:
            statuses = list(pool.map(lambda _: client.get(path).status_code, range(job.requests)))
        return began, time.monotonic(), statuses


def serve(jobs: Queue[Job | None], results: Queue[Any], start: Barrier) -> None:
    while (job := jobs.get()) is not None:
        start.wait(60)  # every worker sends at once
        results.put(send(job))


def hold_every_slot(url: str, account: str, slots: int, lease: float, held: Event) -> None:
    """Takes all ``slots`` of the account and holds them (renewing) until killed."""
    rate = RateSettings.model_validate(
        {"max_concurrency": slots, "shared": url, "shared_lease": lease}
    )
    budget = BudgetRegistry().get(account, rate)
    with ExitStack() as stack:
        for _ in range(slots):
            stack.enter_context(budget.slot())
        held.set()
        time.sleep(300)
