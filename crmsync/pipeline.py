"""One pipeline run: pull, read consent back, collect pending jobs, build profiles,
segment, map, diff, push and acknowledge, collect again.

Every destination of the pipeline is fed from a single pass over the profiles (the
planner); each change goes to the destination's ``Pusher`` (``push``), which records a
batch as in flight before it goes out and its acknowledgements right after the
destination answers, so a crash replays at most one batch per destination, and a
replayed batch is the same idempotent upsert.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy.engine import Connection

from crmsync.config import Config, PipelineSpec
from crmsync.contract import Change, ConnectorContext, Destination, Source
from crmsync.diff import Policy
from crmsync.errors import CrmsyncError
from crmsync.incremental import fingerprint, floor_ms, full_reason, too_many
from crmsync.parallel import (
    PlanJob,
    can_start_workers,
    run_workers,
    shared_database,
    slices_for,
    worker_count,
)
from crmsync.planner import LASTING, PlannedRow, Planner, Tally, Target, decisions
from crmsync.profile_scope import KeyRange, ProfileContext
from crmsync.pull import pull_source
from crmsync.push import LEASE_SECONDS, Pusher
from crmsync.runs import DestinationReport, RunOptions, RunReport
from state.ledger import RetryPolicy, add_consent_events, opted_out
from state.planned import (
    SCOPE,
    PlannedWriter,
    Planning,
    ScopeCounts,
    Skips,
    fill_scope,
    kept_invalid,
    last_planning,
    scoped_totals,
    touched_mark,
)
from state.profile_reads import foreign_currency_orders
from state.store import Store
from state.timeutil import now_ms, to_ms

__all__ = ["DestinationReport", "PipelineBusy", "RunOptions", "RunReport", "run_pipeline"]

CONSENT_LOOKBACK = timedelta(minutes=10)
T = TypeVar("T")


class PipelineBusy(CrmsyncError):
    """Another process holds this pipeline's lease."""


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
            lease = (spec.name, holder) if holder is not None else None
            retry = RetryPolicy(
                spec.settings.max_attempts, int(spec.settings.retry_minutes * 60_000)
            )
            pushers = []
            for dest in spec.destinations:
                instance = dest.cls(dest.config, context_for(config, dest.name))
                stack.callback(instance.close)
                dest_report = report.destinations[dest.name] = DestinationReport(
                    dest.name, dest.kind
                )
                pusher = Pusher(
                    dest.name,
                    instance,
                    store,
                    dest_report,
                    options,
                    report.run_id,
                    retry,
                    lease,
                    report.stages,
                )
                pushers.append(pusher)
                stack.callback(pusher.close)  # its sender thread stops before the destination
                if not options.dry_run:
                    _read_consent(store, spec, dest.name, instance, report)
                    pusher.collect()  # jobs an earlier run left: settled before the diff
                    instance.prepare(dest.mapping.field_specs())
            with report.stages.time("plan+push"):
                _sync(store, spec, pushers, options, report, policy, as_of)
            if not options.dry_run:
                for pusher in pushers:
                    with report.stages.time(f"collect.{pusher.name}"):
                        running = pusher.collect(options.job_wait_seconds)
                    if running:
                        report.warnings.append(
                            f"{pusher.name}: {running} jobs still running; the next run "
                            "collects their results"
                        )
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
        report.stages.stop()
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
                stopwatch=report.stages,
            )
        finally:
            source.close()
        for stream, s in stats.streams.items():
            report.pulled[f"{source_spec.name}.{stream}"] = s.as_dict()


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
            fresh = []
            for channel in {u.channel for u in chunk}:
                same = [u for u in chunk if u.channel is channel]
                known = opted_out(conn, [u.email for u in same], scopes, channel.value)
                fresh += [u for u in same if u.email not in known]
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


def _sync(
    store: Store,
    spec: PipelineSpec,
    batchers: list[Pusher],
    options: RunOptions,
    report: RunReport,
    policy: Policy,
    as_of: datetime,
) -> None:
    """Plans the people whose plan may have changed since the last planning (everyone,
    in worker processes for a large store, when it must: ``incremental``) and pushes the
    changes; then keeps each person's plan and the planning's marks, unless this is a dry
    run or a destination failed (the next run then redoes the same people).

    Wherever the planning runs, pushes and ledger writes happen here, batch by batch.
    """
    ctx = ProfileContext(
        sources=tuple(s.name for s in spec.sources),
        consent_scopes=tuple(s.name for s in spec.sources) + tuple(b.name for b in batchers),
        currency=spec.currency,
        as_of_ms=to_ms(as_of) or 0,
        settings=spec.settings.profile,
    )
    targets = [Target(d.name, d.mapping) for d in spec.destinations]
    planner = Planner(ctx, spec.segments, targets, policy, as_of, options.samples)
    tally = planner.new_tally()
    started, as_of_ms, print_ = now_ms(), floor_ms(as_of), fingerprint(spec)
    writer = None if options.dry_run else PlannedWriter(store.engine)
    keep = writer.add_one if writer is not None else None
    try:
        with store.engine.connect() as conn:
            last = last_planning(conn, spec.name)
            mark = touched_mark(conn)
            backfill = options.kind == "backfill" or options.full
            reason = full_reason(last, print_, as_of_ms, backfill=backfill)
            kept = _Kept()
            if last is not None and reason is None:
                counted = fill_scope(
                    conn,
                    spec.name,
                    last,
                    sources=ctx.sources,
                    consent_scopes=ctx.consent_scopes,
                    destinations=[b.name for b in batchers],
                    due_ms=as_of_ms,
                    now_ms=policy.now_ms,
                )
                conn.commit()
                if too_many(counted.people, last.profiles):
                    reason = "most people to plan again"
                else:
                    kept = _plan_scope(conn, spec, planner, tally, batchers, last, counted, keep)
        if reason is not None:
            report.planning = f"everyone: {reason}"
            _plan_everyone(
                store, spec, ctx, planner, tally, batchers, policy, as_of, options, writer
            )
        else:
            report.planning = "incremental"
        for batcher in batchers:
            batcher.flush()
        _kept_in_tally(tally, kept)
        report.profiles_kept = kept.people
        if kept.rename:
            report.not_synced = store.name_not_synced(
                spec.name,
                ctx,
                tally.invalid,
                currencies=tally.foreign_orders > 0,
                run_id=report.run_id,
                keep=not options.dry_run,
                limit=options.not_synced,
            )
        else:  # nothing staged, nobody planned again: the last run's names still hold
            report.not_synced = store.renew_not_synced(
                spec.name,
                ctx.sources,
                run_id=report.run_id,
                keep=not options.dry_run,
                limit=options.not_synced,
            )
        if writer is not None and not any(d.error for d in report.destinations.values()):
            planning = Planning(
                print_,
                as_of_ms,
                started,
                mark,
                dict(tally.segments),
                {n: {k: c[k] for k in LASTING if c.get(k)} for n, c in tally.counts.items()},
                tally.profiles,
                tally.foreign_orders,
            )
            writer.keep(spec.name, planning, everyone=reason is not None)
    finally:
        if writer is not None:
            writer.close()
        _report_tally(report, tally, spec.currency, options.samples)


@dataclass
class _Kept:
    """What an incremental run takes from the last planning for the people it keeps."""

    people: int = 0  # planned last time and not again
    segments: Counter[str] = field(default_factory=Counter)  # their segment sizes
    skips: Skips = field(default_factory=dict)  # their lasting skips per destination
    invalid: dict[str, list[str]] = field(default_factory=dict)  # per destination
    foreign_orders: int | None = None  # None: counted by this planning
    rename: bool = True  # name the records not synced again


def _plan_scope(
    conn: Connection,
    spec: PipelineSpec,
    planner: Planner,
    tally: Tally,
    batchers: list[Pusher],
    last: Planning,
    counted: ScopeCounts,
    keep: Callable[[PlannedRow], None] | None,
) -> _Kept:
    """Plans the people in the scope on ``conn``, in this process; returns what the rest
    keep from the last planning."""
    redone, skipped, people = scoped_totals(conn, spec.name)
    for index, change in planner.changes(conn, tally, scope=SCOPE, planned=keep):
        batchers[index].add(change)
    segments = Counter(last.segments)
    segments.subtract(redone)
    skips = {
        name: {k: n - skipped.get(name, {}).get(k, 0) for k, n in counts.items()}
        for name, counts in last.skips.items()
    }
    foreign = None
    if not counted.arrived:  # no order staged or re-keyed: the count stands
        foreign = last.foreign_orders
    elif spec.sources:
        foreign = foreign_currency_orders(conn, planner.ctx)
    return _Kept(
        people=last.profiles - people,
        segments=+segments,
        skips={name: {k: n for k, n in c.items() if n} for name, c in skips.items()},
        invalid=kept_invalid(conn, spec.name) if counted.people else {},
        foreign_orders=foreign,
        rename=counted.people > 0,
    )


def _kept_in_tally(tally: Tally, kept: _Kept) -> None:
    """Adds the people kept from the last planning to the run's tally: their segments,
    and per destination a decision each: their lasting skip (``planner.LASTING``, e.g.
    "invalid"), else "unchanged" (``profiles_kept`` says how many were not recomputed)."""
    tally.profiles += kept.people
    tally.segments.update(kept.segments)
    if kept.foreign_orders is not None:
        tally.foreign_orders = kept.foreign_orders
    for name, counts in tally.counts.items():
        skipped = kept.skips.get(name, {})
        counts.update(skipped)
        if kept.people - sum(skipped.values()):
            counts["unchanged"] += kept.people - sum(skipped.values())
        keys = kept.invalid.get(name)
        if keys:
            tally.invalid[name] = sorted([*tally.invalid.get(name, []), *keys])


def _plan_everyone(
    store: Store,
    spec: PipelineSpec,
    ctx: ProfileContext,
    planner: Planner,
    tally: Tally,
    batchers: list[Pusher],
    policy: Policy,
    as_of: datetime,
    options: RunOptions,
    writer: PlannedWriter | None,
) -> None:
    """Plans every person, in worker processes for a large store."""
    keep = writer.add_one if writer is not None else None
    parallel = _parallel_plan(store, spec, ctx, policy, as_of, options)
    if parallel is None:
        with store.engine.connect() as conn:
            for index, change in planner.changes(conn, tally, planned=keep):
                batchers[index].add(change)
        return
    job, slices, workers = parallel

    def deliver(part: int, index: int, change: Change) -> None:
        batchers[index].add(change, part)

    def finished(part: int) -> None:
        for batcher in batchers:
            batcher.flush(part)

    plans = writer.add if writer is not None else None
    tally.add(run_workers(job, slices, workers, deliver, finished, plans), options.samples)


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
        send_plans=not options.dry_run,
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
        destination.decisions.update(decisions(counts))
        room = max(samples - len(destination.samples), 0)
        destination.samples.extend(tally.samples.get(name, [])[:room])
