"""Push and acknowledge: changes go to a destination a batch at a time, and what it answers
goes to the ledger.

Per batch, in this order: the changes are recorded as in flight (one transaction), the
destination is called, and its answers are recorded (one transaction): acknowledgements
move into the ledger, pending ones stay in flight with their job, refusals become
failures. A crash before the answers are recorded leaves the batch in flight, which the
next run's diff treats as "may be applied"; re-sending it is the same idempotent upsert.

Pending jobs (destinations with asynchronous imports) are collected at the start of each
run and at its end, waiting there up to ``RunOptions.job_wait_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from crmsync.contract import Change, Destination, Outcome, PushResult
from crmsync.errors import ConfigError, ConnectorError
from crmsync.runs import DestinationReport, RunOptions
from crmsync.stopwatch import Stopwatch
from state.ledger import RetryPolicy, mark_in_flight, pending_jobs, record_results
from state.store import Store
from state.timeutil import now_ms

LEASE_SECONDS = 15 * 60
_POLL_FIRST, _POLL_MAX = 0.5, 10.0  # seconds between looks at pending jobs while waiting


class Pusher:
    """Collects one destination's changes and pushes them a batch at a time.

    Changes are batched per slice of the key space (``part``; a run in one process has
    one), each slice's batches cut at fixed positions from its first change. So batches
    never depend on how worker processes interleave, and a re-run after a crash, which
    skips the acknowledged people (whole batches), rebuilds exactly the batches the
    crashed run had not acknowledged: the outbox's content-addressed files then replace
    themselves instead of holding a person twice.
    """

    def __init__(
        self,
        name: str,
        destination: Destination,
        store: Store,
        report: DestinationReport,
        options: RunOptions,
        run_id: int | None,
        retry: RetryPolicy,
        lease: tuple[str, str] | None = None,
        stages: Stopwatch | None = None,
    ) -> None:
        self.name, self.destination, self.store = name, destination, store
        self.report, self.options, self.run_id, self.retry = report, options, run_id, retry
        self.pending: dict[int, list[Change]] = {}  # slice -> its changes not yet pushed
        self.lease = lease  # (pipeline, holder) to renew per batch
        self.stages = stages or Stopwatch()  # where the time goes: pushing and the ledger

    def add(self, change: Change, part: int = 0) -> None:
        if self.report.error:
            self.report.counts["not_sent"] += 1
            return
        pending = self.pending.setdefault(part, [])
        pending.append(change)
        if len(pending) >= self.destination.max_batch:
            self._push(self.pending.pop(part))

    def flush(self, part: int | None = None) -> None:
        """Pushes what is pending of slice ``part`` (of every slice, in order, when None)."""
        parts = sorted(self.pending) if part is None else [part]
        for each in parts:
            self._push(self.pending.pop(each, []))

    def _push(self, batch: list[Change]) -> None:
        if not batch or self.options.dry_run:
            return
        stages = self.stages
        with stages.time("ledger"), self.store.transaction() as conn:
            mark_in_flight(conn, self.name, self.run_id, batch, now_ms())
        try:
            with stages.time(f"push.{self.name}"):
                results = self.destination.push(batch)
        except (ConfigError, ConnectorError) as exc:  # AuthError is a ConnectorError
            # refused or down: keep the batch as failed (retried next run) and stop
            # sending to this destination for the rest of this run
            self.report.error = str(exc)
            results = [PushResult(c.person_key, Outcome.FAILED, message=str(exc)) for c in batch]
        if self.lease is not None:
            self.store.renew_lease(f"pipeline:{self.lease[0]}", self.lease[1], LEASE_SECONDS)
        self._record(batch, results)
        if self.options.progress:
            self.options.progress(f"push:{self.name}", len(batch))

    def _record(self, batch: Sequence[Change], results: Sequence[PushResult]) -> None:
        with self.stages.time("ledger"), self.store.transaction() as conn:
            counts = record_results(
                conn, self.name, self.run_id, batch, results, now_ms=now_ms(), retry=self.retry
            )
        self.report.counts.update({k: v for k, v in counts.items() if v})

    def collect(
        self, wait_seconds: float = 0.0, sleep: Callable[[float], None] = time.sleep
    ) -> int:
        """Settles the destination's finished jobs; returns how many are still running.

        With ``wait_seconds`` it keeps looking, less often as time goes on, until every
        job is done or the time is up.
        """
        deadline = time.monotonic() + wait_seconds
        pause = _POLL_FIRST
        while True:
            with self.store.engine.connect() as conn:
                jobs = pending_jobs(conn, self.name)
            running = 0
            for job, changes in jobs.items():
                try:
                    results = self.destination.collect(job, changes)
                except ConnectorError as exc:
                    self.report.error = self.report.error or str(exc)
                    return len(jobs)
                if results is None:
                    running += 1
                else:
                    self._record(changes, results)
            if not running or time.monotonic() >= deadline:
                return running
            sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, _POLL_MAX)
