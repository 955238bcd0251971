"""The planning of one run: who is planned, in this process or in workers, and how the
people kept from the last planning are counted.

A run plans again only the people whose plan may have changed since the last planning
(``incremental`` decides when it must plan everyone instead); everyone is planned in
worker processes when the store is large and the database is shared (``parallel``).
Wherever the planning runs, its changes go to the run's pushers here, batch by batch,
and the plans it made are kept (``state.planned``) once every change was pushed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Connection

from crmsync.config import PipelineSpec
from crmsync.contract import Change
from crmsync.diff import Policy
from crmsync.incremental import fingerprint, floor_ms, full_reason, too_many
from crmsync.profile_scope import KeyRange, ProfileContext
from crmsync.progress import PROFILES
from crmsync.runs import RunOptions, RunReport
from engine.parallel import (
    PlanJob,
    can_start_workers,
    run_workers,
    shared_database,
    slices_for,
    worker_count,
)
from engine.planner import LASTING, TICK_EVERY, Planned, Planner, Tally, Target, decisions
from engine.push import Pusher
from state.not_synced import Naming
from state.planned import (
    SCOPE,
    PlannedRow,
    PlannedWriter,
    Planning,
    ScopeCounts,
    Skips,
    fill_scope,
    last_planning,
    scope_keys,
    scoped_totals,
    touched_mark,
)
from state.profile_reads import customer_count, foreign_currency_orders
from state.store import Store
from state.timeutil import now_ms, to_ms

__all__ = ["Kept", "kept_from_last", "kept_in_tally", "plan_and_push"]


def plan_and_push(
    store: Store,
    spec: PipelineSpec,
    pushers: list[Pusher],
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
        consent_scopes=tuple(s.name for s in spec.sources) + tuple(p.name for p in pushers),
        currency=spec.currency,
        as_of_ms=to_ms(as_of) or 0,
        settings=spec.settings.profile,
    )
    targets = [Target(d.name, d.mapping) for d in spec.destinations]
    planner = Planner(ctx, spec.segments, targets, policy, as_of, options.samples)
    tally = planner.new_tally()
    started, as_of_ms, print_ = now_ms(), floor_ms(as_of), fingerprint(spec)
    writer = None if options.dry_run else PlannedWriter(store.engine)
    try:
        with store.engine.connect() as conn:
            last = last_planning(conn, spec.name)
            mark = touched_mark(conn)
            backfill = options.kind == "backfill" or options.full
            reason = full_reason(last, print_, as_of_ms, backfill=backfill)
            kept = Kept()
            if last is not None and reason is None:
                counted = fill_scope(
                    conn,
                    spec.name,
                    last,
                    sources=ctx.sources,
                    consent_scopes=ctx.consent_scopes,
                    destinations=[p.name for p in pushers],
                    due_ms=as_of_ms,
                    now_ms=policy.now_ms,
                )
                conn.commit()
                if too_many(counted.people, last.profiles):
                    reason = "most people to plan again"
                else:
                    keep = writer.add_one if writer is not None else None
                    options.progress.start(PROFILES, counted.people)
                    tick = partial(options.progress.advance, PROFILES, TICK_EVERY)
                    kept = _plan_scope(
                        conn, spec, planner, tally, pushers, last, counted, keep, tick
                    )
            conn.commit()  # the scope's reads end; the table stays for the naming
            if reason is not None:
                report.planning = f"everyone: {reason}"
                options.progress.start(PROFILES, _people_expected(store, ctx, last))
                _plan_everyone(store, spec, planner, tally, pushers, options, writer)
            else:
                report.planning = "incremental"
            options.progress.finish(PROFILES, tally.profiles)
            for pusher in pushers:
                pusher.hand_over()
            kept_in_tally(tally, kept)
            report.profiles_kept = kept.people
            # while the last batches are pushed: the names follow from the planning alone
            scope = scope_keys() if reason is None else None
            name_not_synced(store, spec, ctx, tally, options, report, kept, scope, conn)
        for pusher in pushers:
            pusher.flush()
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
        report_tally(report, tally, spec.currency, options.samples)


@dataclass
class Kept:
    """What an incremental run takes from the last planning for the people it keeps
    (the default: nobody kept, as when everyone is planned)."""

    people: int = 0  # planned last time and not again
    segments: Counter[str] = field(default_factory=Counter)  # their segment sizes
    skips: Skips = field(default_factory=dict)  # their lasting skips per destination
    foreign_orders: int | None = None  # None: counted by this planning
    rename: bool = True  # name the records not synced again


def _plan_scope(
    conn: Connection,
    spec: PipelineSpec,
    planner: Planner,
    tally: Tally,
    pushers: list[Pusher],
    last: Planning,
    counted: ScopeCounts,
    keep: Planned | None,
    tick: Callable[[], None],
) -> Kept:
    """Plans the people in the scope on ``conn``, in this process; returns what the rest
    keep from the last planning. An empty scope (nothing arrived, nobody due) is not
    read: building the planning's queries is most of what a run with nothing to do would
    spend planning."""
    if counted.people:
        for index, change in planner.changes(conn, tally, tick=tick, scope=SCOPE, planned=keep):
            pushers[index].add(change)
    return kept_from_last(conn, spec, planner.ctx, last, counted)


def kept_from_last(
    conn: Connection, spec: PipelineSpec, ctx: ProfileContext, last: Planning, counted: ScopeCounts
) -> Kept:
    """What the people outside ``SCOPE`` (filled on ``conn``) keep from the last planning:
    its totals less those of the people in the scope as last planned. The plans stored
    stay those of the last planning until this run keeps its own, so this may be read
    before or after the scope is planned (a run on workers reads it before)."""
    redone, skipped, people = scoped_totals(conn, spec.name)
    segments = Counter(last.segments)
    segments.subtract(redone)
    skips = {
        name: {k: n - skipped.get(name, {}).get(k, 0) for k, n in counts.items()}
        for name, counts in last.skips.items()
    }
    foreign = None
    if not counted.arrived:  # no order staged or re-keyed: the count stands
        foreign = last.foreign_orders
    elif spec.sources and last.foreign_orders == 0:
        # none before: the orders staged since the last planning began are all that
        # can be in another currency now (a re-keyed order keeps its currency)
        since = last.started_at
        foreign = foreign_currency_orders(conn, ctx, staged_since=since)
    elif spec.sources:
        foreign = foreign_currency_orders(conn, ctx)
    return Kept(
        people=last.profiles - people,
        segments=+segments,
        skips={name: {k: n for k, n in c.items() if n} for name, c in skips.items()},
        foreign_orders=foreign,
        rename=counted.people > 0,
    )


def kept_in_tally(tally: Tally, kept: Kept) -> None:
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
        unchanged = kept.people - sum(skipped.values())
        if unchanged:  # no zero entry: the report lists the decisions made
            counts["unchanged"] += unchanged


def _plan_everyone(
    store: Store,
    spec: PipelineSpec,
    planner: Planner,
    tally: Tally,
    pushers: list[Pusher],
    options: RunOptions,
    writer: PlannedWriter | None,
) -> None:
    """Plans every person, in worker processes for a large store."""
    parallel = _parallel_plan(store, spec, planner, options)
    if parallel is None:
        keep = writer.add_one if writer is not None else None
        tick = partial(options.progress.advance, PROFILES, TICK_EVERY)
        with store.engine.connect() as conn:
            for index, change in planner.changes(conn, tally, tick=tick, planned=keep):
                pushers[index].add(change)
        return
    job, slices, workers = parallel

    def deliver(part: int, index: int, change: Change) -> None:
        pushers[index].add(change, part)

    def finished(part: int) -> None:
        for pusher in pushers:
            pusher.flush(part)

    def planned(rows: list[PlannedRow]) -> None:
        assert writer is not None
        writer.add(rows)
        options.progress.advance(PROFILES, len(rows))  # the workers' people, as they come

    plans = planned if writer is not None else None
    tally.add(run_workers(job, slices, workers, deliver, finished, plans), options.samples)


def _people_expected(store: Store, ctx: ProfileContext, last: Planning | None) -> int:
    """About how many people a planning of everyone goes through, for its progress: the
    last planning's count, or on a first run the customers staged (people known only by
    their orders come on top: the bar's total then grows)."""
    if last is not None:
        return last.profiles
    with store.engine.connect() as conn:
        return customer_count(conn, ctx.sources)


def _parallel_plan(
    store: Store, spec: PipelineSpec, planner: Planner, options: RunOptions
) -> tuple[PlanJob, list[KeyRange], int] | None:
    """The job, slices and worker count for a run in worker processes, or None to plan
    here. The workers plan as ``planner`` would: with its context, targets, policy and
    ``as_of``."""
    if not shared_database(store.url) or not can_start_workers():
        return None
    with store.engine.connect() as conn:
        workers = worker_count(conn, planner.ctx.sources, spec.settings.workers)
        if workers <= 1:
            return None
        slices = slices_for(conn, planner.ctx.sources, workers)
    job = PlanJob(
        state_url=store.url,
        ctx=planner.ctx,
        segment_rules=dict(spec.segments.rules),
        fields=dict(spec.fields),
        targets=planner.targets,
        policy=planner.policy,
        as_of=planner.as_of,
        samples=options.samples,
        send_changes=not options.dry_run,
        send_plans=not options.dry_run,
    )
    return job, slices, workers


def name_not_synced(
    store: Store,
    spec: PipelineSpec,
    ctx: ProfileContext,
    tally: Tally,
    options: RunOptions,
    report: RunReport,
    kept: Kept,
    scope: Select[Any] | None = None,
    conn: Connection | None = None,
) -> None:
    """Names the records not synced in the report (and keeps the names, unless this is
    a dry run). ``tally.invalid`` holds the keys of the people planned that a
    destination could not address.

    With nobody planned again and nothing staged (``kept.rename`` false) the last run's
    names hold and are renewed. A run that planned again only the people of ``scope``
    (a query of their keys, run on ``conn`` when it reads a temporary table) names only
    theirs again (``Store.rename_not_synced``), the others' names standing. Otherwise
    (everyone planned, or no run named any records yet) the records of the people
    planned are named, with those of nobody and in another currency. A dry run does not
    rename (that writes, if only to roll back: beside a run of the same pipeline its rows
    would wait on that run's, and could deadlock with them); it names everyone's records
    read-only, those of the people outside its scope as the last run named them.
    """
    keep, limit = not options.dry_run, options.not_synced
    if not kept.rename:
        report.not_synced = store.renew_not_synced(
            spec.name, ctx.sources, run_id=report.run_id, keep=keep, limit=limit
        )
        return
    naming = Naming(report.run_id, keep, limit, currencies=tally.foreign_orders > 0)
    named = None
    if scope is not None and keep:
        named = store.rename_not_synced(scope, spec.name, ctx, tally.invalid, naming, conn)
    if named is None:
        invalid = tally.invalid
        if scope is not None and not keep:
            kept_ones = store.named_outside(scope, spec.name, conn)
            invalid = {
                name: sorted([*tally.invalid.get(name, []), *kept_ones.get(name, [])])
                for name in {*tally.invalid, *kept_ones}
            }
        named = store.name_not_synced(spec.name, ctx, invalid, naming)
    report.not_synced = named


def report_tally(report: RunReport, tally: Tally, currency: str, samples: int) -> None:
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
