"""One pipeline run: pull (while each destination's consent read-back and preparation make
their calls), record the opt-outs read back, collect pending jobs, plan and push, collect
again.

Every destination of the pipeline is fed from a single pass over the profiles (the
run's planning: ``plan_run``); each change goes to the destination's ``Pusher``
(``push``), which records a batch as in flight before it goes out and its
acknowledgements right after the destination answers, so a crash replays at most the
batches on the wire (one per destination, or its ``pushes_at_once``), and a replayed
batch is the same idempotent upsert.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from functools import partial

from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.contract import ConnectorContext, Destination
from crmsync.diff import Policy
from crmsync.errors import ConfigError, CrmsyncError
from crmsync.phase_log import log_run_times
from crmsync.runs import DestinationReport, RunOptions, RunReport, jobs_left
from engine.consent_read import CONSENT_CHUNK, CONSENT_LOOKBACK, ConsentRead, read_consent
from engine.plan_events import plan_events
from engine.plan_run import plan_and_push
from engine.prepare import Preparing
from engine.pull import pull_source
from engine.push import LEASE_SECONDS, Pusher
from engine.push_events import push_events
from engine.read_ahead import SourceRecipe
from engine.threads import beside
from state.ledger import RetryPolicy
from state.store import Store
from state.timeutil import now_ms, to_ms

__all__ = [
    "CONSENT_CHUNK",
    "CONSENT_LOOKBACK",
    "DestinationReport",
    "PipelineBusy",
    "RunOptions",
    "RunReport",
    "run_pipeline",
]


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
    if options.events and not spec.settings.events:
        raise ConfigError(
            f"pipeline {spec.name!r} sends no events: set events = true in "
            f"[pipelines.{spec.name}] before backfilling them"
        )
    as_of = (options.as_of or datetime.now(UTC)).astimezone(UTC)
    report = RunReport(spec.name, None, options.kind, options.dry_run, as_of)
    holder = None
    if not options.dry_run:
        holder = store.acquire_lease(f"pipeline:{spec.name}", LEASE_SECONDS)
        if holder is None:
            raise PipelineBusy(f"pipeline {spec.name!r} is already running in another process")
    try:
        policy = begin_run(store, spec, options, report, as_of)
        with ExitStack() as stack:
            lease = (spec.name, holder) if holder is not None else None
            retry = RetryPolicy(
                spec.settings.max_attempts, int(spec.settings.retry_minutes * 60_000)
            )
            # the destinations are opened first, so that each one's consent read-back
            # makes its calls while the sources are read (``consent_read``)
            pushers = [
                _open(config, dest, store, options, report, retry, lease, stack)
                for dest in spec.destinations
            ]
            reads = {
                p.name: stack.enter_context(ConsentRead(store, p.name, p.destination)).start()
                for p in pushers
                if not options.dry_run
            }
            # and each one's preparation too (fields, properties, lists: ``prepare``)
            preparing = {
                p.name: stack.enter_context(
                    Preparing(p.name, p.destination, dest.mapping.field_specs())
                ).start()
                for dest, p in zip(spec.destinations, pushers, strict=True)
                if not options.dry_run
            }
            if options.pull:
                _pull(config, spec, store, options, report, as_of)
                staged = sum(stats.get("staged", 0) for stats in report.pulled.values())
                with report.stages.time("statistics"):
                    store.refresh_statistics("staging", changed=staged)
            scopes = [s.name for s in spec.sources] + [d.name for d in spec.destinations]
            for dest, pusher in zip(spec.destinations, pushers, strict=True):
                if not options.dry_run:
                    # while the read-back's last calls may still be out
                    with report.stages.time(f"prepare.{dest.name}"):
                        preparing[dest.name].wait()
                        pusher.collect()  # jobs an earlier run left: settled before the diff
                    with report.stages.time(f"consent.{dest.name}"):
                        report.consent_read[dest.name] = reads[dest.name].record(scopes)
            with report.stages.time("plan+push"):
                plan_and_push(store, spec, pushers, options, report, policy, as_of)
            if options.dry_run and spec.settings.events:  # what a run would send
                with report.stages.time("events"):
                    plan_events(store, spec, {p.name: p.destination for p in pushers}, report)
            if not options.dry_run:
                # rows written: the answers, and the plans of the people planned again
                answered = sum(d.counts["ok"] for d in report.destinations.values())
                planned = report.profiles - report.profiles_kept
                # gathered beside the collect and the events, which write a small share
                # of those tables (the answers of the people left PENDING) or none; and
                # a SQLite store's log copied into its file, which the close would do
                upkeep = partial(store.after_run, changed=max(answered, planned))
                with beside(upkeep, "crmsync-statistics") as kept_up:
                    _collect(pushers, options, report)
                    if spec.settings.events:
                        with report.stages.time("events"):
                            send_events(store, spec, pushers, options, report, retry)
                    with report.stages.time("statistics"):
                        kept_up.result()  # raises what the analysis or the copy raised
        report.status = run_status(report)
    except BaseException as exc:
        raised = report.ended_by(exc)
        # a read cut short may have gone back to the pool still holding its snapshot,
        # which SQLite refuses to write from: the run's end is recorded on a fresh one
        store.forget_idle_connections()
        if raised is not exc:
            raise raised from None
        raise
    finally:
        report.stages.stop()
        log_run_times(spec.name, report.status, report.stages)
        if report.run_id is not None:
            store.finish_run(report.run_id, report.status, report.counts(), report.error)
        if holder is not None:
            store.release_lease(f"pipeline:{spec.name}", holder)
    return report


def _open(
    config: Config,
    dest: DestinationSpec,
    store: Store,
    options: RunOptions,
    report: RunReport,
    retry: RetryPolicy,
    lease: tuple[str, str] | None,
    stack: ExitStack,
) -> Pusher:
    """Opens a destination and its pusher; ``stack`` closes the pusher first, so that its
    sender thread stops before the destination does."""
    instance = dest.cls(dest.config, context_for(config, dest.name))
    stack.callback(instance.close)
    dest_report = report.destinations[dest.name] = DestinationReport(dest.name, dest.kind)
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
        settle_while_pushing=True,
    )
    stack.callback(pusher.close)
    return pusher


def _collect(pushers: list[Pusher], options: RunOptions, report: RunReport) -> None:
    """Settles the jobs this run left pending, waiting up to ``job_wait_seconds``."""
    for pusher in pushers:
        with report.stages.time(f"collect.{pusher.name}"):
            running = pusher.collect(options.job_wait_seconds)
        if running:
            report.warnings.append(jobs_left(pusher.name, running, options.job_wait_seconds))


def send_events(
    store: Store,
    spec: PipelineSpec,
    pushers: list[Pusher],
    options: RunOptions,
    report: RunReport,
    retry: RetryPolicy,
) -> None:
    """The run's events, after its people: a destination whose people push stopped on
    an error gets none this run (and the derivation's cursor waits for it)."""
    blocked = {
        p.name: f"no events sent: {p.report.error}"
        for p in pushers
        if p.report.error and not p.report.full
    }
    destinations = {p.name: p.destination for p in pushers}
    push_events(store, spec, destinations, options, report, retry, blocked)


def run_status(report: RunReport) -> str:
    """``failed`` when a destination failed, ``partial`` when records failed or were
    rejected or a destination could take no more (the rest waits for a later run), else
    ``succeeded``."""
    destinations = report.destinations.values()
    events = report.events.values()
    if any(d.error and not d.full for d in destinations):
        return "failed"
    if any(e.error and not e.full for e in events):
        return "failed"
    if any(d.full for d in destinations) or any(e.full for e in events):
        return "partial"
    if any(d.counts[o] for d in destinations for o in ("failed", "rejected")):
        return "partial"
    if any(e.counts[o] for e in events for o in ("failed", "rejected")):
        return "partial"
    return "succeeded"


def begin_run(
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
        recipe = SourceRecipe(
            source_spec.cls, source_spec.config, context_for(config, source_spec.name)
        )
        source = recipe.build()
        try:
            stats = pull_source(
                store,
                source_spec.name,
                source,
                until=until,
                lookback=lookback,
                full=options.full,
                progress=options.progress,
                stopwatch=report.stages,
                recipe=recipe if spec.settings.workers != 1 else None,
            )
        finally:
            source.close()
        for stream, s in stats.streams.items():
            report.pulled[f"{source_spec.name}.{stream}"] = s.as_dict()


def read_consent_once(
    store: Store, spec: PipelineSpec, name: str, destination: Destination, report: RunReport
) -> None:
    """Stores opt-outs made in the destination since the last read, as consent events
    (``consent_read``: a run starts the calls before its pull and records them after).

    Opt-outs crmsync already knows (e.g. the unsubscribes it pushed itself) are not
    recorded again. The cursor moves only once the whole read is done, to a little before
    the read began, so a change made while reading is picked up next time.
    """
    scopes = [s.name for s in spec.sources] + [d.name for d in spec.destinations]
    report.consent_read[name] = read_consent(store, name, destination, scopes)
