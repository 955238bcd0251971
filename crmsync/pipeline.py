"""One pipeline run: pull, read consent back, build profiles, segment, map, diff, push.

Every destination of the pipeline is fed from a single pass over the profiles. A batch is
pushed when full, and its acknowledgements are written to the ledger in one transaction
right after the destination answers, so a crash replays at most one batch per
destination, and a replayed batch is the same idempotent upsert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from connectors.base import Change, ConnectorContext, Destination, Outcome, PushResult, Source
from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.diff import Policy
from crmsync.errors import ConfigError, ConnectorError, CrmsyncError
from crmsync.parallel import (
    PlanJob,
    can_start_workers,
    run_workers,
    shared_database,
    slices_for,
    worker_count,
)
from crmsync.person_streams import KeyRange, ProfileContext
from crmsync.planner import Planner, Tally, Target
from crmsync.pull import pull_source
from state.ledger import (
    RetryPolicy,
    add_consent_events,
    opted_out,
    record_results,
)
from state.store import Store
from state.timeutil import now_ms, to_ms

LEASE_SECONDS = 15 * 60
CONSENT_LOOKBACK = timedelta(minutes=10)
T = TypeVar("T")


class PipelineBusy(CrmsyncError):
    """Another process holds this pipeline's lease."""


@dataclass
class RunOptions:
    kind: str = "manual"  # manual | scheduled | backfill
    as_of: datetime | None = None
    dry_run: bool = False  # `plan`: compute everything, push and record nothing
    pull: bool = True
    full: bool = False  # backfill --full
    since: datetime | None = None  # backfill --since
    samples: int = 5
    progress: Callable[[str, int], None] | None = None  # (phase, n) after each batch


@dataclass
class DestinationReport:
    name: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class RunReport:
    pipeline: str
    run_id: int | None
    kind: str
    dry_run: bool
    as_of: datetime
    status: str = "running"
    pulled: dict[str, dict[str, int]] = field(default_factory=dict)
    profiles: int = 0
    segments: Counter[str] = field(default_factory=Counter)
    destinations: dict[str, DestinationReport] = field(default_factory=dict)
    consent_read: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "profiles": self.profiles,
            "segments": dict(self.segments),
            "consent_read": self.consent_read,
            "destinations": {n: dict(d.counts) for n, d in self.destinations.items()},
            "warnings": self.warnings,
        }


def context_for(config: Config, name: str) -> ConnectorContext:
    defaults = config.settings.defaults
    return ConnectorContext(
        name=name,
        config_dir=config.path.parent.resolve(),
        default_region=defaults.region,
        timezone=defaults.timezone,
    )


def run_pipeline(
    config: Config, spec: PipelineSpec, store: Store, options: RunOptions
) -> RunReport:
    as_of = (options.as_of or datetime.now(UTC)).astimezone(UTC)
    report = RunReport(spec.name, None, options.kind, options.dry_run, as_of)
    holder = None
    if not options.dry_run:
        holder = store.acquire_lease(f"pipeline:{spec.name}", LEASE_SECONDS)
        if holder is None:
            raise PipelineBusy(f"pipeline {spec.name!r} is already running in another process")
    try:
        policy = _start(store, spec, options, report, as_of)
        with ExitStack() as stack:
            if options.pull:
                _pull(config, spec, store, options, report, as_of)
            destinations = {}
            for dest in spec.destinations:
                instance = dest.cls(dest.config, context_for(config, dest.name))
                stack.callback(instance.close)
                destinations[dest.name] = instance
                report.destinations[dest.name] = DestinationReport(dest.name, dest.kind)
                if not options.dry_run:
                    _read_consent(store, spec, dest.name, instance, report)
                    instance.prepare(dest.mapping.field_specs())
            lease = (spec.name, holder) if holder is not None else None
            _sync(store, spec, destinations, options, report, policy, as_of, lease)
        failed = any(d.error for d in report.destinations.values())
        record_failures = any(
            d.counts[o] for d in report.destinations.values() for o in ("failed", "rejected")
        )
        report.status = "failed" if failed else ("partial" if record_failures else "succeeded")
    except BaseException as exc:
        report.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        report.error = _describe(exc)
        raise
    finally:
        if report.run_id is not None:
            store.finish_run(report.run_id, report.status, report.counts(), report.error)
        if holder is not None:
            store.release_lease(f"pipeline:{spec.name}", holder)
    return report


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, CrmsyncError) else str(exc)


def _start(
    store: Store, spec: PipelineSpec, options: RunOptions, report: RunReport, as_of: datetime
) -> Policy:
    force_before = force_since = None
    if options.kind == "backfill" and not options.dry_run:
        store.mark_interrupted(spec.name)
        resumed = store.unfinished_backfill(spec.name)
        if resumed is not None and resumed.force_before is not None:
            force_before, force_since = resumed.force_before, resumed.force_since
            report.warnings.append(f"resuming backfill run {resumed.id}")
        else:
            force_before = datetime.now(UTC)
            force_since = options.since
        names = [s.name for s in spec.sources]
        store.reset_cursors(names, to=None if options.full or force_since is None else force_since)
    elif not options.dry_run:
        store.mark_interrupted(spec.name)
    if not options.dry_run:
        report.run_id = store.start_run(
            spec.name, options.kind, as_of, force_before=force_before, force_since=force_since
        )
    return Policy(
        max_attempts=spec.settings.max_attempts,
        now_ms=now_ms(),
        force_before_ms=to_ms(force_before),
        force_since_ms=to_ms(force_since),
    )


def _pull(
    config: Config,
    spec: PipelineSpec,
    store: Store,
    options: RunOptions,
    report: RunReport,
    as_of: datetime,
) -> None:
    until = min(datetime.now(UTC), as_of) if options.as_of else datetime.now(UTC)
    lookback = timedelta(minutes=spec.settings.lookback_minutes)
    for source_spec in spec.sources:
        source: Source = source_spec.cls(source_spec.config, context_for(config, source_spec.name))
        try:
            stats = pull_source(
                store,
                source_spec.name,
                source,
                until=until,
                lookback=lookback,
                full=options.full,
                progress=_phase(options.progress, "pull"),
            )
        finally:
            source.close()
        for stream, s in stats.streams.items():
            report.pulled[f"{source_spec.name}.{stream}"] = {
                "received": s.received,
                "staged": s.staged,
                "quarantined": s.quarantined,
                "corrected": s.corrected,
            }


def _phase(progress: Callable[[str, int], None] | None, phase: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda n: progress(phase, n)


def _read_consent(
    store: Store, spec: PipelineSpec, name: str, destination: Destination, report: RunReport
) -> None:
    """Stores opt-outs made in the destination since the last read, as consent events.

    Opt-outs crmsync already knows (e.g. the unsubscribes it pushed itself) are not
    recorded again. The cursor moves only once the whole read is done, to a little before
    the read began, so a change made while reading is picked up next time.
    """
    started = datetime.now(UTC) - CONSENT_LOOKBACK
    since = store.cursor(name, "consent")
    scopes = [s.name for s in spec.sources] + [d.name for d in spec.destinations]
    added = 0
    for chunk in _chunks(destination.read_consent(since), 1000):
        with store.transaction() as conn:
            known = opted_out(conn, [u.email for u in chunk], scopes)
            fresh = [u for u in chunk if u.email not in known]
            added += add_consent_events(conn, name, fresh, now_ms())
    store.set_cursor(name, "consent", max(started, since) if since else started)
    report.consent_read[name] = added


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Batcher:
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
        spec: DestinationSpec,
        destination: Destination,
        store: Store,
        report: DestinationReport,
        options: RunOptions,
        run_id: int | None,
        retry: RetryPolicy,
    ) -> None:
        self.spec, self.destination, self.store = spec, destination, store
        self.report, self.options, self.run_id, self.retry = report, options, run_id, retry
        self.pending: dict[int, list[Change]] = {}  # slice -> its changes not yet pushed
        self.lease: tuple[str, str] | None = None  # (pipeline, holder) to renew per batch

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
        try:
            results = self.destination.push(batch)
        except (ConfigError, ConnectorError) as exc:  # AuthError is a ConnectorError
            # refused or down: keep the batch as failed (retried next run) and stop
            # sending to this destination for the rest of this run
            self.report.error = str(exc)
            results = [PushResult(c.person_key, Outcome.FAILED, message=str(exc)) for c in batch]
        if self.lease is not None:
            self.store.renew_lease(f"pipeline:{self.lease[0]}", self.lease[1], LEASE_SECONDS)
        with self.store.transaction() as conn:
            counts = record_results(
                conn, self.spec.name, self.run_id, batch, results, now_ms=now_ms(), retry=self.retry
            )
        self.report.counts.update(counts)
        if self.options.progress:
            self.options.progress(f"push:{self.spec.name}", len(batch))


def _sync(
    store: Store,
    spec: PipelineSpec,
    destinations: dict[str, Destination],
    options: RunOptions,
    report: RunReport,
    policy: Policy,
    as_of: datetime,
    lease: tuple[str, str] | None = None,
) -> None:
    """Plans every person (in worker processes for a large store) and pushes the changes.

    Wherever the planning runs, pushes and ledger writes happen here, batch by batch.
    """
    ctx = ProfileContext(
        sources=tuple(s.name for s in spec.sources),
        consent_scopes=tuple(s.name for s in spec.sources) + tuple(destinations),
        currency=spec.currency,
        as_of_ms=to_ms(as_of) or 0,
        settings=spec.settings.profile,
    )
    retry = RetryPolicy(spec.settings.max_attempts, int(spec.settings.retry_minutes * 60_000))
    batchers = [
        _Batcher(
            d,
            destinations[d.name],
            store,
            report.destinations[d.name],
            options,
            report.run_id,
            retry,
        )
        for d in spec.destinations
    ]
    for batcher in batchers:
        batcher.lease = lease
    targets = [Target(d.name, d.mapping) for d in spec.destinations]
    planner = Planner(ctx, spec.segments, targets, policy, as_of, options.samples)
    tally = planner.new_tally()
    try:
        parallel = _parallel_plan(store, spec, ctx, policy, as_of, options)
        if parallel is None:
            with store.engine.connect() as conn:
                for index, change in planner.changes(conn, tally):
                    batchers[index].add(change)
        else:
            job, slices, workers = parallel

            def deliver(part: int, index: int, change: Change) -> None:
                batchers[index].add(change, part)

            def finished(part: int) -> None:
                for batcher in batchers:
                    batcher.flush(part)

            tally.add(run_workers(job, slices, workers, deliver, finished), options.samples)
        for batcher in batchers:
            batcher.flush()
    finally:
        _report_tally(report, tally, spec.currency, options.samples)


def _parallel_plan(
    store: Store,
    spec: PipelineSpec,
    ctx: ProfileContext,
    policy: Policy,
    as_of: datetime,
    options: RunOptions,
) -> tuple[PlanJob, list[KeyRange], int] | None:
    """The job, slices and worker count for a run in worker processes, or None to plan here."""
    if not shared_database(store.url) or not can_start_workers():
        return None
    with store.engine.connect() as conn:
        workers = worker_count(conn, ctx.sources, spec.settings.workers)
        if workers <= 1:
            return None
        slices = slices_for(conn, ctx.sources, workers)
    job = PlanJob(
        state_url=store.url,
        ctx=ctx,
        segment_rules=dict(spec.segments.rules),
        fields=dict(spec.fields),
        targets=tuple(Target(d.name, d.mapping) for d in spec.destinations),
        policy=policy,
        as_of=as_of,
        samples=options.samples,
        send_changes=not options.dry_run,
    )
    return job, slices, workers


def _report_tally(report: RunReport, tally: Tally, currency: str, samples: int) -> None:
    if tally.foreign_orders:
        report.warnings.append(
            f"{tally.foreign_orders} orders are not in {currency} and are left out of spend metrics"
        )
    report.profiles += tally.profiles
    report.segments.update(tally.segments)
    for name, counts in tally.counts.items():
        destination = report.destinations[name]
        destination.counts.update(counts)
        room = max(samples - len(destination.samples), 0)
        destination.samples.extend(tally.samples.get(name, [])[:room])
