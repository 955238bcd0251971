"""One pipeline run: pull, read consent back, build profiles, segment, map, diff, push.

Every destination of the pipeline is fed from a single pass over the profiles. A batch is
pushed when full, and its acknowledgements are written to the ledger in one transaction
right after the destination answers, so a crash replays at most one batch per
destination, and a replayed batch is the same idempotent upsert.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson

from connectors.base import Change, ConnectorContext, Destination, Outcome, PushResult, Source
from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.diff import Acked, OpenFailure, Policy, Skip, decide
from crmsync.errors import AuthError, ConfigError, ConnectorError, CrmsyncError
from crmsync.profiles import (
    ProfileBuilder,
    ProfileContext,
    foreign_currency_orders,
    keyed_groups,
    profile_streams,
)
from crmsync.pull import pull_source
from state.ledger import (
    TAG_SEPARATOR,
    RetryPolicy,
    add_consent_events,
    failures_query,
    ledger_query,
    opted_out,
    record_results,
)
from state.store import Store
from state.timeutil import now_ms, to_ms

log = logging.getLogger("crmsync.pipeline")
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
    """Collects one destination's changes and pushes them a batch at a time."""

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
        self.pending: list[Change] = []
        self.lease: tuple[str, str] | None = None  # (pipeline, holder) to renew per batch
        mapping = spec.mapping
        self.identities = [f for f in (mapping.identity_email, mapping.identity_phone) if f]

    def identified(self, profile: dict[str, Any]) -> bool:
        """Whether the destination can address this person (any identity field set)."""
        return not self.identities or any(profile.get(f) for f in self.identities)

    def add(self, change: Change) -> None:
        if self.report.error:
            self.report.counts["not_sent"] += 1
            return
        self.pending.append(change)
        if len(self.pending) >= self.destination.max_batch:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch or self.options.dry_run:
            return
        try:
            results = self.destination.push(batch)
        except (AuthError, ConfigError) as exc:
            self.report.error = str(exc)
            results = [PushResult(c.person_key, Outcome.FAILED, message=str(exc)) for c in batch]
        except ConnectorError as exc:
            # the destination is down: keep the batch as failed (retried next run) and
            # stop sending to it for the rest of this run
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


def _ledger_rows(rows: Iterator[Any]) -> Iterator[tuple[str, Acked]]:
    for r in rows:
        tags = tuple(r.segments.split(TAG_SEPARATOR)) if r.segments else ()
        yield (
            r.person_key,
            Acked(r.payload_hash, tags, r.remote_id, r.status, r.acked_at, r.payload),
        )


def _failure_rows(rows: Iterator[Any]) -> Iterator[tuple[str, OpenFailure]]:
    for r in rows:
        yield (
            r.person_key,
            OpenFailure(r.reason_class, r.payload_hash, r.attempts, r.next_attempt_at),
        )


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
    ctx = ProfileContext(
        sources=tuple(s.name for s in spec.sources),
        consent_scopes=tuple(s.name for s in spec.sources) + tuple(destinations),
        currency=spec.currency,
        as_of_ms=to_ms(as_of) or 0,
        settings=spec.settings.profile,
    )
    builder = ProfileBuilder(ctx)
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
    segments = spec.segments
    with store.engine.connect() as conn:
        foreign = foreign_currency_orders(conn, ctx)
        if foreign:
            report.warnings.append(
                f"{foreign} orders are not in {spec.currency} and are left out of spend metrics"
            )
        streaming = conn.execution_options(stream_results=True, yield_per=2000)
        streams = profile_streams(conn, ctx)
        for d in spec.destinations:
            streams.append(_ledger_rows(iter(streaming.execute(ledger_query(conn, d.name)))))
            streams.append(_failure_rows(iter(streaming.execute(failures_query(conn, d.name)))))
        for key, groups in keyed_groups(streams):
            if not (groups[0] or groups[1] or groups[2]):
                continue  # only a ledger, failure or consent row: nobody to sync
            profile = builder.build(key, groups[:4])
            report.profiles += 1
            member_of = segments.evaluate(profile, as_of)
            report.segments.update(member_of)
            activity = _activity(groups)
            for index, batcher in enumerate(batchers):
                mapping = batcher.spec.mapping
                acked_rows, failure_rows = groups[4 + 2 * index], groups[5 + 2 * index]
                acked = acked_rows[0][1] if acked_rows else None
                failure = failure_rows[0][1] if failure_rows else None
                outcome = decide(
                    profile,
                    mapping.apply(profile),
                    mapping.tags_for(member_of),
                    batcher.identified(profile),
                    acked,
                    failure,
                    policy,
                    activity,
                )
                counts = batcher.report.counts
                if isinstance(outcome, Skip):
                    counts[outcome.value] += 1
                    continue
                _count_change(counts, outcome)
                if len(batcher.report.samples) < options.samples:
                    batcher.report.samples.append(_sample(outcome, acked))
                batcher.add(outcome)
        for batcher in batchers:
            batcher.flush()


def _activity(groups: list[list[Any]]) -> int | None:
    times = [row.updated_at for row in groups[0] if row.updated_at is not None]
    if groups[1]:
        times.append(groups[1][0].activity_at)
    return max(times) if times else None


def _count_change(counts: Counter[str], change: Change) -> None:
    if change.action.value != "upsert":
        counts[change.action.value] += 1
    else:
        counts["create" if change.is_new else "update"] += 1
    counts["tags_added"] += len(change.tags_add)
    counts["tags_removed"] += len(change.tags_remove)


def _sample(change: Change, acked: Acked | None) -> dict[str, Any]:
    before = orjson.loads(acked.payload) if acked is not None and acked.payload else {}
    after = dict(change.fields)
    changed = {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    }
    return {
        "person_key": change.person_key,
        "action": change.action.value
        if change.action.value != "upsert"
        else ("create" if change.is_new else "update"),
        "fields": changed,
        "tags_add": list(change.tags_add),
        "tags_remove": list(change.tags_remove),
        "email_consent": change.email_consent.value,
    }
