"""The planning phase of a run on workers, on the coordinator's side: the key space cut
into slices before, the slices' tallies added up after, and the plans kept at the end.

What a run in one process does around its planning (``engine.plan_run``) is done here
the same way: the planning's marks are read before any slice is planned, the tallies
are added in key order (so the samples and the records named are those one process
would report), and every person's plan is kept with the marks, once everything was
pushed and no destination failed, so that a later run in one process can plan
incrementally from it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from crmsync.config import PipelineSpec
from crmsync.incremental import fingerprint, floor_ms, full_reason
from crmsync.profile_scope import KeyRange, ProfileContext
from distributed.work import profile_context, tally_of
from engine.planner import LASTING, Tally
from state.planned import PlannedWriter, Planning, last_planning, touched_mark
from state.profile_reads import customer_count, key_boundaries, ranges
from state.store import Store
from state.timeutil import now_ms
from state.work_queue import fill_fresh

WHY_EVERYONE = "a run on workers plans everyone"


@dataclass
class Plan:
    """A run's planning: its context, its marks, its slices and, once they are planned,
    what they found."""

    ctx: ProfileContext
    marks: Planning  # fingerprint, as_of, started_at and touched_upto; totals come later
    reason: str  # why everyone is planned
    slices: list[KeyRange]
    changes: list[dict[str, int]] = field(default_factory=list)  # per slice and destination
    tally: Tally = field(default_factory=Tally)


def cut(store: Store, spec: PipelineSpec, as_of: datetime, people: int, backfill: bool) -> Plan:
    """The planning's marks, taken before anyone is planned, and slices of about
    ``people`` customers each."""
    started, as_of_ms, print_ = now_ms(), floor_ms(as_of), fingerprint(spec)
    ctx = profile_context(spec, as_of)
    with store.engine.connect() as conn:
        last = last_planning(conn, spec.name)
        mark = touched_mark(conn)
        parts = max(1, -(-customer_count(conn, ctx.sources) // people))
        slices = ranges(key_boundaries(conn, ctx.sources, parts))
    reason = full_reason(last, print_, as_of_ms, backfill=backfill) or WHY_EVERYONE
    marks = Planning(print_, as_of_ms, started, mark, {}, {}, 0, 0)
    return Plan(ctx, marks, reason, slices)


def add_up(
    plan: Plan, results: Sequence[dict[str, Any]], names: Sequence[str], samples: int
) -> None:
    """Adds the slices' results, in key order, to ``plan``."""
    plan.tally = Tally(
        counts={n: Counter() for n in names},
        samples={n: [] for n in names},
        invalid={n: [] for n in names},
    )
    for result in results:
        plan.tally.add(tally_of(result["tally"]), samples)
        plan.changes.append({k: int(v) for k, v in result["changes"].items()})


def keep(store: Store, spec: PipelineSpec, run_id: int, plan: Plan) -> None:
    """Keeps every person's plan and the planning's marks, as a run in one process keeps
    them after planning everyone."""
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
        writer.keep(spec.name, marks, everyone=True)
    finally:
        writer.close()
