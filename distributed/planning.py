"""The planning phase of a run on workers, on the coordinator's side: the people to plan
cut into slices before, the slices' tallies added up after, and the plans kept at the end.

What a run in one process does around its planning (``engine.plan_run``) is done here
the same way: the planning's marks are read before any slice is planned; when the last
planning allows it, only the people whose plan may have changed are planned (the scope
that ``state.planned.fill_scope`` gathers, copied for the workers to
``state.work_queue.planned_scope`` and cut into slices of it), and the rest keep what the
last planning found for them (``plan_run.kept_from_last``); else everyone is, in slices
of the customers. The tallies are added in key order (so the samples and the records
named are those one process would report), and the plans made are kept with the marks,
once everything was pushed and no destination failed, so that the next run, on workers
or in one process, can plan incrementally from them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from crmsync.config import PipelineSpec
from crmsync.incremental import fingerprint, floor_ms, full_reason, too_many
from crmsync.profile_scope import KeyRange, ProfileContext
from distributed.work import profile_context, tally_of
from engine.plan_run import Kept, kept_from_last, kept_in_tally
from engine.planner import LASTING, Tally
from state.planned import (
    SCOPE,
    PlannedWriter,
    Planning,
    drop_temporary,
    fill_scope,
    last_planning,
    touched_mark,
)
from state.profile_reads import customer_count, key_boundaries, ranges
from state.store import Store
from state.timeutil import now_ms
from state.work_queue import fill_fresh, keep_scope, scope_boundaries


@dataclass
class Plan:
    """A run's planning: its context, its marks, its slices and, once they are planned,
    what they found."""

    ctx: ProfileContext
    marks: Planning  # fingerprint, as_of, started_at and touched_upto; totals come later
    reason: str | None  # why everyone is planned; None: only the scope is
    slices: list[KeyRange]
    kept: Kept = field(default_factory=Kept)  # what the people not planned again keep
    changes: list[dict[str, int]] = field(default_factory=list)  # per slice and destination
    tally: Tally = field(default_factory=Tally)
    # per destination, the groups its upserts name (``PreparedOnce.expect``)
    groups: dict[str, set[str]] = field(default_factory=dict)

    @property
    def planning(self) -> str:
        """How the run planned, for its report (as ``engine.plan_run`` says it)."""
        return "incremental" if self.reason is None else f"everyone: {self.reason}"


def cut(
    store: Store,
    spec: PipelineSpec,
    as_of: datetime,
    people: int,
    *,
    backfill: bool,
    run_id: int,
    now: int,
) -> Plan:
    """The planning's marks, taken before anyone is planned, and slices of about
    ``people`` people each: of the run's scope when the last planning allows an
    incremental one (none at all when nobody's plan may have changed), else of every
    customer. ``now``: the run's clock (``Policy.now_ms``), for the failures due."""
    started, as_of_ms, print_ = now_ms(), floor_ms(as_of), fingerprint(spec)
    ctx = profile_context(spec, as_of)
    with store.engine.connect() as conn:
        last = last_planning(conn, spec.name)
        mark = touched_mark(conn)
        reason = full_reason(last, print_, as_of_ms, backfill=backfill)
        marks = Planning(print_, as_of_ms, started, mark, {}, {}, 0, 0)
        if last is not None and reason is None:
            try:
                scoped = _cut_scope(conn, spec, ctx, last, people, run_id, due=as_of_ms, now=now)
            finally:  # the temporary table goes with the pooled connection's session
                conn.rollback()
                drop_temporary(conn, SCOPE)
                conn.commit()
            if scoped is not None:
                kept, slices = scoped
                return Plan(ctx, marks, None, slices, kept)
            reason = "most people to plan again"
        parts = max(1, -(-customer_count(conn, ctx.sources) // people))
        slices = ranges(key_boundaries(conn, ctx.sources, parts))
    return Plan(ctx, marks, reason, slices)


def _cut_scope(
    conn: Connection,
    spec: PipelineSpec,
    ctx: ProfileContext,
    last: Planning,
    people: int,
    run_id: int,
    *,
    due: int,
    now: int,
) -> tuple[Kept, list[KeyRange]] | None:
    """Gathers the scope on ``conn`` as a run in one process does, and, unless it holds
    most people (None: plan everyone), copies it for the workers and returns what the
    rest keep and the scope's slices. ``due``: the run's ``as_of`` (people due by their
    ``next_at``); ``now``: its clock (failures due); both in ms."""
    counted = fill_scope(
        conn,
        spec.name,
        last,
        sources=ctx.sources,
        consent_scopes=ctx.consent_scopes,
        destinations=[d.name for d in spec.destinations],
        due_ms=due,
        now_ms=now,
    )
    conn.commit()
    if too_many(counted.people, last.profiles):
        return None
    kept = kept_from_last(conn, spec, ctx, last, counted)
    keep_scope(conn, run_id)
    conn.commit()
    if not counted.people:
        return kept, []
    parts = max(1, -(-counted.people // people))
    return kept, ranges(scope_boundaries(conn, run_id, parts))


def add_up(
    plan: Plan, results: Sequence[dict[str, Any]], names: Sequence[str], samples: int
) -> None:
    """Adds the slices' results, in key order, to ``plan``, then what the people kept
    from the last planning carry."""
    plan.tally = Tally(
        counts={n: Counter() for n in names},
        samples={n: [] for n in names},
        invalid={n: [] for n in names},
    )
    plan.groups = {n: set() for n in names}
    for result in results:
        plan.tally.add(tally_of(result["tally"]), samples)
        plan.changes.append({k: int(v) for k, v in result["changes"].items()})
        # (absent from a worker of an older version: the pushes add what is missing)
        for name, found in dict(result.get("groups") or {}).items():
            plan.groups.setdefault(name, set()).update(str(group) for group in found)
    kept_in_tally(plan.tally, plan.kept)


def keep(store: Store, spec: PipelineSpec, run_id: int, plan: Plan) -> None:
    """Keeps the plans of the people planned (every person's, when everyone was) and the
    planning's marks, as a run in one process keeps them."""
    tally = plan.tally
    marks = replace(
        plan.marks,
        segments=dict(tally.segments),
        skips={n: {k: c[k] for k in LASTING if c.get(k)} for n, c in tally.counts.items()},
        profiles=tally.profiles,
        foreign_orders=tally.foreign_orders,
    )
    writer = PlannedWriter(store.engine)
    try:
        fill_fresh(writer.conn, run_id)
        writer.conn.commit()
        writer.keep(spec.name, marks, everyone=plan.reason is not None)
    finally:
        writer.close()
