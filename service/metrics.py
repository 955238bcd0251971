"""Prometheus metrics of the service, from its events, the HTTP seam and the state store.

``Metrics`` is an ``Observer`` (``service.events``): counters and the run-duration
histogram grow from ``RunFinished``'s report; API calls, 429s and retries come from the
HTTP seam's telemetry (``connectors.http.telemetry``), labelled with the store bound where
the client was made (``service.logs.bind``); pending jobs, the failure backlog and the
seconds since each pipeline's last successful run are read when Prometheus scrapes, from
the state database of each store loaded (``StoreLoaded.config``). Every metric carries the
store's name (``""`` when one configuration file is served).

What a destination's figures mean: ``crmsync_people_total{decision}`` counts each
profile's decision in a run (create, update, archive, delete, unchanged, or why it was
skipped: they add up to the pipeline's profiles), ``crmsync_pushed_total{result}`` what
the destination answered for the changes sent (ok, pending, failed, rejected,
compliance, not_sent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.http import telemetry
from service import logs
from service.events import (
    Event,
    NextRun,
    RunFinished,
    RunSkipped,
    RunStarted,
    StoreBroken,
    StoreLoaded,
)
from service.state_reads import SUCCESS, StateReads

__all__ = ["Metrics"]

log = logging.getLogger("crmsync.service.metrics")

# a run takes seconds (nothing changed) to hours (a first load of a million customers)
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
_PULLED = {"received": "pulled", "staged": "staged", "unchanged": "unchanged",
           "quarantined": "quarantined", "later": "later"}  # fmt: skip
_RESULTS = ("ok", "pending", "failed", "rejected", "compliance", "not_sent")


@dataclass(frozen=True)
class _Loaded:
    pipelines: tuple[str, ...]
    url: str | None
    destinations: tuple[str, ...]


class Metrics:
    """The service's metrics in their own registry (``self.registry``), which
    ``service.health.start_http`` serves on ``/metrics``. Thread-safe; call ``close``
    to stop listening to the HTTP seam."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        reads: StateReads | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._reads = reads if reads is not None else StateReads()
        self._clock = clock
        self._lock = threading.Lock()
        self._stores: dict[str, _Loaded] = {}
        self._last_success: dict[tuple[str, str], float] = {}  # (store, pipeline) -> epoch
        self._running: dict[tuple[str, str], int] = {}
        r = self.registry
        self.runs = Counter(
            "crmsync_runs", "Runs ended, by outcome (succeeded, partial, failed, interrupted)",
            ["store", "pipeline", "outcome"], registry=r,
        )  # fmt: skip
        self.running = Gauge("crmsync_runs_running", "Runs under way", ["store", "pipeline"],
                             registry=r)  # fmt: skip
        self.skipped = Counter(
            "crmsync_runs_skipped", "Scheduled runs not started (lease held, previous run going)",
            ["store", "pipeline", "reason"], registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "crmsync_run_duration_seconds", "Seconds a run took, whatever its outcome",
            ["store", "pipeline"], buckets=RUN_BUCKETS, registry=r,
        )  # fmt: skip
        self.records = Counter(
            "crmsync_records",
            "Records per source stream: pulled (received), staged (new or changed), "
            "unchanged, quarantined, later (left for the next run)",
            ["store", "source", "stream", "outcome"], registry=r,
        )  # fmt: skip
        self.people = Counter(
            "crmsync_people", "Per destination, each profile's decision in a run",
            ["store", "destination", "decision"], registry=r,
        )  # fmt: skip
        self.pushed = Counter(
            "crmsync_pushed", "Per destination, what it answered for the changes sent",
            ["store", "destination", "result"], registry=r,
        )  # fmt: skip
        self.api_calls = Counter(
            "crmsync_api_calls", "HTTP tries to a vendor's API, by status ('none': no answer)",
            ["store", "vendor", "status"], registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            "crmsync_api_rate_limited", "Tries a vendor answered with 429", ["store", "vendor"],
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "crmsync_api_retries", "Tries that repeated a failed one", ["store", "vendor"],
            registry=r,
        )  # fmt: skip
        self.broken = Gauge(
            "crmsync_store_broken", "1 while a store's configuration cannot be loaded",
            ["store"], registry=r,
        )  # fmt: skip
        self.next_run = Gauge(
            "crmsync_next_run_timestamp_seconds", "When a pipeline runs next (Unix time)",
            ["store", "pipeline"], registry=r,
        )  # fmt: skip
        r.register(_FromState(self))
        telemetry.add_listener(self.exchange)

    def close(self) -> None:
        telemetry.remove_listener(self.exchange)
        self._reads.close()

    # -- events -------------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        if isinstance(event, StoreLoaded):
            self._loaded(event)
        elif isinstance(event, StoreBroken):
            self.broken.labels(event.store).set(1)
        elif isinstance(event, RunStarted | RunFinished):
            self._count_running(event.store, event.pipeline, isinstance(event, RunStarted))
            if isinstance(event, RunFinished):
                self._finished(event)
        elif isinstance(event, RunSkipped):
            self.skipped.labels(event.store, event.pipeline, event.reason).inc()
        elif isinstance(event, NextRun):
            gauge = self.next_run.labels(event.store, event.pipeline)
            gauge.set(event.at.timestamp() if event.at is not None else float("nan"))

    def _count_running(self, store: str, pipeline: str, started: bool) -> None:
        """Runs under way: never below 0 (a run that ended without a start event, e.g.
        one started before a reload)."""
        with self._lock:
            n = max(0, self._running.get((store, pipeline), 0) + (1 if started else -1))
            self._running[(store, pipeline)] = n
            self.running.labels(store, pipeline).set(n)

    def _loaded(self, event: StoreLoaded) -> None:
        config = event.config
        url = config.state_url if config is not None else None
        destinations = {
            d.name
            for name in event.pipelines
            if config is not None and name in config.pipelines
            for d in config.pipelines[name].destinations
        }
        with self._lock:
            self._stores[event.store] = _Loaded(event.pipelines, url, tuple(sorted(destinations)))
        self.broken.labels(event.store).set(0)
        if url is not None:
            try:
                found = self._reads.last_successes(url, event.pipelines)
            except Exception as exc:  # no database yet, or unreachable: readiness says so
                log.warning("cannot read the last runs of store %r: %s", event.store, exc)
                return
            with self._lock:
                for pipeline, at in found.items():
                    key = (event.store, pipeline)
                    self._last_success[key] = max(self._last_success.get(key, 0.0), at.timestamp())

    def _finished(self, event: RunFinished) -> None:
        report = event.report
        store = event.store
        self.runs.labels(store, event.pipeline, report.status).inc()
        self.duration.labels(store, event.pipeline).observe(max(0.0, event.seconds))
        if report.status in SUCCESS:
            with self._lock:
                self._last_success[(store, event.pipeline)] = event.at.timestamp()
        for key, stats in report.pulled.items():
            source, _, stream = key.partition(".")
            for name, outcome in _PULLED.items():
                if stats.get(name):
                    self.records.labels(store, source, stream, outcome).inc(stats[name])
        for name, destination in report.destinations.items():
            for decision, n in destination.decisions.items():
                if n:
                    self.people.labels(store, name, decision).inc(n)
            for result in _RESULTS:
                if destination.counts.get(result):
                    self.pushed.labels(store, name, result).inc(destination.counts[result])

    # -- the HTTP seam ------------------------------------------------------------------

    def exchange(self, exchange: telemetry.Exchange) -> None:
        store = str(logs.context().get("store", ""))
        status = str(exchange.status) if exchange.status is not None else "none"
        self.api_calls.labels(store, exchange.vendor, status).inc()
        if exchange.status == 429:
            self.rate_limited.labels(store, exchange.vendor).inc()
        if exchange.attempt > 1:
            self.retries.labels(store, exchange.vendor).inc()

    # -- read at scrape time ------------------------------------------------------------

    def stores(self) -> dict[str, _Loaded]:
        with self._lock:
            return dict(self._stores)

    def last_success(self, store: str, pipeline: str) -> float | None:
        with self._lock:
            return self._last_success.get((store, pipeline))


class _FromState(Collector):
    """The gauges computed when Prometheus scrapes: seconds since the last successful
    run (from the events, and at load from the state database), pending jobs and the
    failure backlog (from the state database)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # not known before a store is loaded: collected at every scrape

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        now = m._clock()
        age = GaugeMetricFamily(
            "crmsync_seconds_since_last_success",
            "Seconds since the pipeline's last run that went through (succeeded or partial); "
            "absent while it never has",
            labels=["store", "pipeline"],
        )
        jobs = GaugeMetricFamily(
            "crmsync_pending_jobs", "Asynchronous jobs sent and not yet collected",
            labels=["store", "destination"],
        )  # fmt: skip
        backlog = GaugeMetricFamily(
            "crmsync_failure_backlog",
            "People a destination refused, still on file, by reason class",
            labels=["store", "destination", "reason"],
        )
        for store, loaded in sorted(m.stores().items()):
            for pipeline in loaded.pipelines:
                at = m.last_success(store, pipeline)
                if at is not None:
                    age.add_metric([store, pipeline], max(0.0, now - at))
            if loaded.url is None or not loaded.destinations:
                continue
            try:
                pending = m._reads.pending_jobs(loaded.url, loaded.destinations)
                failures = m._reads.failure_backlog(loaded.url, loaded.destinations)
            except Exception as exc:
                log.warning("cannot read the state of store %r: %s", store, exc)
                continue
            for destination in loaded.destinations:
                jobs.add_metric([store, destination], pending.get(destination, 0))
            for (destination, reason), n in sorted(failures.items()):
                backlog.add_metric([store, destination, reason], n)
        yield age
        yield jobs
        yield backlog
