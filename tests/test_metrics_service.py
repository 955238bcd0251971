"""``service.metrics``: the figures Prometheus scrapes, from the scheduler's events, from
the HTTP seam's tries (labelled with the store bound where the client was made, even when
a destination's worker thread sends), and from the state database at scrape time."""

from __future__ import annotations

import random
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client import CollectorRegistry

from connectors.http import BudgetRegistry, HttpClient, HttpSettings, RetrySettings
from crmsync.config import Config
from crmsync.runs import DestinationReport, RunReport
from engine.resolve import load_config
from service import logs
from service.events import (
    NextRun,
    RunFinished,
    RunSkipped,
    RunStarted,
    StoreBroken,
    StoreLoaded,
)
from service.health import Readiness, start_http
from service.metrics import Metrics
from state import schema
from state.store import Store
from state.timeutil import to_ms
from tests.e2e import make_site
from tests.fakes import FakeClock

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    found = Metrics(clock=(T0 + timedelta(minutes=30)).timestamp)  # scraped at T0+30m
    try:
        yield found
    finally:
        found.close()


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def a_report(status: str = "succeeded", run_id: int = 7) -> RunReport:
    report = RunReport("main", run_id, "scheduled", False, T0, status=status)
    report.pulled = {
        "shop.customers": {"received": 120, "staged": 100, "unchanged": 15, "quarantined": 5},
        "shop.orders": {"received": 40, "staged": 40, "unchanged": 0, "quarantined": 0},
    }
    out = DestinationReport("mc", "mailchimp")
    out.decisions = Counter({"create": 60, "update": 20, "unchanged": 30, "invalid": 4})
    out.counts = out.decisions + Counter({"ok": 75, "failed": 3, "rejected": 2})
    report.destinations = {"mc": out}
    return report


def test_a_finished_run_counts_its_outcome_duration_records_and_people(metrics: Metrics) -> None:
    metrics.notify(StoreLoaded("acme", ("main",)))
    metrics.notify(RunStarted("acme", "main", "scheduled", T0))
    assert value(metrics, "crmsync_runs_running", store="acme", pipeline="main") == 1
    metrics.notify(RunFinished("acme", "main", a_report(), 42.0, T0 + timedelta(seconds=42)))
    metrics.notify(RunFinished("acme", "main", a_report("failed", 8), 3.0, T0))

    assert value(metrics, "crmsync_runs_running", store="acme", pipeline="main") == 0
    runs = "crmsync_runs_total"
    assert value(metrics, runs, store="acme", pipeline="main", outcome="succeeded") == 1
    assert value(metrics, runs, store="acme", pipeline="main", outcome="failed") == 1
    duration = {"store": "acme", "pipeline": "main"}
    assert value(metrics, "crmsync_run_duration_seconds_count", **duration) == 2
    assert value(metrics, "crmsync_run_duration_seconds_sum", **duration) == 45.0
    assert value(metrics, "crmsync_run_duration_seconds_bucket", **duration, le="5.0") == 1

    records = {"store": "acme", "source": "shop", "stream": "customers"}
    assert value(metrics, "crmsync_records_total", **records, outcome="pulled") == 240
    assert value(metrics, "crmsync_records_total", **records, outcome="staged") == 200
    assert value(metrics, "crmsync_records_total", **records, outcome="quarantined") == 10
    people = {"store": "acme", "destination": "mc"}
    assert value(metrics, "crmsync_people_total", **people, decision="create") == 120
    assert value(metrics, "crmsync_people_total", **people, decision="update") == 40
    assert value(metrics, "crmsync_people_total", **people, decision="unchanged") == 60
    assert value(metrics, "crmsync_people_total", **people, decision="invalid") == 8
    assert value(metrics, "crmsync_pushed_total", **people, result="ok") == 150
    assert value(metrics, "crmsync_pushed_total", **people, result="failed") == 6
    assert value(metrics, "crmsync_pushed_total", **people, result="rejected") == 4
    # the decisions are not counted again as push results
    assert value(metrics, "crmsync_pushed_total", **people, result="create") is None


def test_seconds_since_the_last_success_is_computed_when_scraped(metrics: Metrics) -> None:
    metrics.notify(StoreLoaded("", ("main", "other")))
    age = "crmsync_seconds_since_last_success"
    assert value(metrics, age, store="", pipeline="main") is None  # never succeeded
    metrics.notify(RunFinished("", "main", a_report(), 1.0, T0))
    metrics.notify(RunFinished("", "other", a_report("failed"), 1.0, T0))
    assert value(metrics, age, store="", pipeline="main") == 30 * 60  # the clock is T0+30m
    assert value(metrics, age, store="", pipeline="other") is None
    metrics.notify(RunFinished("", "main", a_report("partial"), 1.0, T0 + timedelta(minutes=20)))
    assert value(metrics, age, store="", pipeline="main") == 10 * 60


def test_skips_broken_stores_and_next_runs_are_shown(metrics: Metrics) -> None:
    metrics.notify(RunSkipped("acme", "main", "running in another process", "host:12"))
    metrics.notify(StoreBroken("beta", ("destinations.mc.api_key: required",)))
    metrics.notify(NextRun("acme", "main", T0 + timedelta(hours=1)))
    skipped = {"store": "acme", "pipeline": "main", "reason": "running in another process"}
    assert value(metrics, "crmsync_runs_skipped_total", **skipped) == 1
    assert value(metrics, "crmsync_store_broken", store="beta") == 1
    next_run = value(metrics, "crmsync_next_run_timestamp_seconds", store="acme", pipeline="main")
    assert next_run == (T0 + timedelta(hours=1)).timestamp()
    metrics.notify(StoreLoaded("beta", ("main",)))
    assert value(metrics, "crmsync_store_broken", store="beta") == 0


def test_api_calls_429s_and_retries_are_counted_per_store_and_vendor_from_worker_threads(
    metrics: Metrics,
) -> None:
    answers = iter([429, 503, 200, 200])

    def vendor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), headers={"Retry-After": "0"})

    clock = FakeClock()
    settings = HttpSettings(base_url="https://api.example.test", retry=RetrySettings())
    with logs.bind(store="acme", pipeline="main"):
        client = HttpClient(
            settings,
            account="mailchimp:0123abcd",
            transport=httpx.MockTransport(vendor),
            sleep=clock.sleep,
            budgets=BudgetRegistry(clock=clock, sleep=clock.sleep),
            rng=random.Random(1),
        )
    # sent from threads that never bound anything, as a destination's pool does
    with ThreadPoolExecutor(1) as pool:
        pool.submit(client.get, "/one").result()
        pool.submit(client.get, "/two").result()
    client.close()

    calls = "crmsync_api_calls_total"
    assert value(metrics, calls, store="acme", vendor="mailchimp", status="429") == 1
    assert value(metrics, calls, store="acme", vendor="mailchimp", status="503") == 1
    assert value(metrics, calls, store="acme", vendor="mailchimp", status="200") == 2
    assert value(metrics, "crmsync_api_rate_limited_total", store="acme", vendor="mailchimp") == 1
    assert value(metrics, "crmsync_api_retries_total", store="acme", vendor="mailchimp") == 2
    assert value(metrics, calls, store="", vendor="mailchimp", status="200") is None


def test_a_closed_metrics_object_stops_counting_api_calls() -> None:
    first = Metrics()
    first.close()
    second = Metrics()
    try:
        client = HttpClient(
            HttpSettings(base_url="https://api.example.test"),
            account="rest:shop.example",
            transport=httpx.MockTransport(lambda _request: httpx.Response(200)),
        )
        client.get("/x")
        client.close()
    finally:
        second.close()
    labels = {"store": "", "vendor": "rest", "status": "200"}
    assert first.registry.get_sample_value("crmsync_api_calls_total", labels) is None
    assert second.registry.get_sample_value("crmsync_api_calls_total", labels) == 1


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("site")
    site = make_site(root, f"sqlite:///{root / 'state.db'}", customers=20)
    config = load_config(site.config)
    store = Store(config.state_url)  # creates the schema
    now = to_ms(T0)
    with store.transaction() as conn:
        conn.execute(
            schema.runs.insert(),
            [
                {"pipeline": "main", "kind": "scheduled", "status": "succeeded",
                 "started_at": now - 600_000, "finished_at": now - 540_000, "as_of": now,
                 "counts": "{}"},
                {"pipeline": "main", "kind": "scheduled", "status": "failed",
                 "started_at": now - 60_000, "finished_at": now - 30_000, "as_of": now,
                 "counts": "{}"},
            ],
        )  # fmt: skip
        conn.execute(
            schema.failures.insert(),
            [
                {"destination": "out", "person_key": f"e:p{i}@example.com",
                 "reason_class": "failed" if i < 3 else "rejected", "message": "no",
                 "payload_hash": "h", "attempts": 1, "first_failed_at": now,
                 "last_failed_at": now, "next_attempt_at": None}
                for i in range(5)
            ],
        )  # fmt: skip
        conn.execute(
            schema.in_flight.insert(),
            [
                {"destination": "out", "person_key": f"e:q{i}@example.com", "action": "upsert",
                 "job": f"job-{i % 2}", "change": "", "sent_at": now}
                for i in range(4)
            ],
        )  # fmt: skip
    store.close()
    return config


def test_pending_jobs_failures_and_last_success_are_read_from_the_state_store(
    metrics: Metrics, loaded: Config
) -> None:
    metrics.notify(StoreLoaded("acme", ("main",), loaded))
    age = value(metrics, "crmsync_seconds_since_last_success", store="acme", pipeline="main")
    assert age == 39 * 60  # finished at T0-9m, scraped at T0+30m; the failed run is not one
    assert value(metrics, "crmsync_pending_jobs", store="acme", destination="out") == 2
    backlog = "crmsync_failure_backlog"
    assert value(metrics, backlog, store="acme", destination="out", reason="failed") == 3
    assert value(metrics, backlog, store="acme", destination="out", reason="rejected") == 2


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_readiness_and_metrics_endpoints(metrics: Metrics, loaded: Config) -> None:
    ready = Readiness()
    server = start_http("127.0.0.1", 0, ready, metrics.registry)
    try:
        assert get(f"{server.url}/healthz") == (200, "ok\n")
        assert get(f"{server.url}/readyz") == (503, "no configuration loaded yet\n")
        for event in (StoreLoaded("acme", ("main",), loaded), StoreBroken("beta", ("x: bad",))):
            ready.notify(event)
            metrics.notify(event)
        status, text = get(f"{server.url}/readyz")
        assert (status, text) == (200, "ready: 1 store(s) loaded; broken: 'beta'\n")
        metrics.notify(RunFinished("acme", "main", a_report(), 2.0, T0))
        status, text = get(f"{server.url}/metrics")
        assert status == 200
        assert 'crmsync_runs_total{outcome="succeeded",pipeline="main",store="acme"} 1.0' in text
        assert 'crmsync_pending_jobs{destination="out",store="acme"} 2.0' in text
        assert get(f"{server.url}/nothing")[0] == 404

        # a store whose database does not answer makes the service unready, and the
        # answer names no password
        gone = replace(loaded, state_url="postgresql://crm:Pw-Vantablack-93@127.0.0.1:1/crm")
        ready.notify(StoreLoaded("gamma", ("main",), gone))
        status, text = get(f"{server.url}/readyz")
        assert status == 503 and text.startswith("state database unreachable:")
        assert "Vantablack" not in text
    finally:
        server.close()
        ready.close()


def test_scrapes_and_probes_are_answered_in_parallel(metrics: Metrics) -> None:
    gate = threading.Event()

    def slow() -> tuple[bool, str]:
        gate.wait(10)
        return True, "ready"

    server = start_http("127.0.0.1", 0, slow, metrics.registry)
    try:
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(get, f"{server.url}/readyz")
            assert get(f"{server.url}/healthz") == (200, "ok\n")  # not held by /readyz
            gate.set()
            assert waiting.result() == (200, "ready\n")
    finally:
        server.close()


def test_two_registries_do_not_share_figures() -> None:
    one, two = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    try:
        one.notify(RunFinished("", "main", a_report(), 1.0, T0))
        labels = {"store": "", "pipeline": "main", "outcome": "succeeded"}
        assert one.registry.get_sample_value("crmsync_runs_total", labels) == 1
        assert two.registry.get_sample_value("crmsync_runs_total", labels) is None
    finally:
        one.close()
        two.close()
