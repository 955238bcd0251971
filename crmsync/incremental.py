"""Incremental planning: which people a run must plan again, and when it must plan all.

A run plans again only the people whose plan may differ from the one the last planning
made: records staged or re-keyed since it began, a time boundary passed (``next_at``),
consent, failures due and changes in flight (``state.planned.fill_scope``). Everyone
else keeps their last plan: their changes were pushed, or are tracked as failures or in
flight, so planning them again would find nothing to do.

That holds only while what shapes plans stays the same, so a run plans everyone when
there is no earlier planning, on a backfill, when ``as_of`` goes back, or when the
fingerprint of the configuration that shapes plans (sources, destinations and their
mappings, segment rules, profile settings, currency, retry cap) changes. A run whose
scope holds most people plans everyone too: it costs the same, and can use workers.

Pure values and decisions only: the queries are in ``state.planned``, the run that
uses them in ``plan_run``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

# Bump when profile building, segments or the diff change what a plan holds for the same
# data and configuration: every pipeline then plans everyone once.
PLANNING_VERSION = 1
MOST = 0.5  # a scope with more than this share of the people planned: plan everyone,
SMALL = 20_000  # unless they are fewer than this (then the scope is quick either way)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def floor_ms(at: datetime) -> int:
    """``at`` in whole milliseconds since the epoch, rounded down exactly (no float)."""
    return (at - _EPOCH) // _MS


def fingerprint(spec: Any) -> str:
    """A digest of everything in a pipeline's configuration that shapes its plans
    (``spec`` is a ``config.PipelineSpec``)."""
    shape = {
        "version": PLANNING_VERSION,
        "sources": [s.name for s in spec.sources],
        "destinations": [(d.name, d.kind, repr(d.mapping.spec)) for d in spec.destinations],
        "segments": sorted(spec.segments.rules.items()),
        "fields": sorted((f.name, f.type) for f in spec.fields.values()),
        "profile": spec.settings.profile.model_dump(mode="json"),
        "currency": spec.currency,
        "max_attempts": spec.settings.max_attempts,
    }
    body = orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def full_reason(
    last: Any,  # state.planned.Planning | None
    print_: str,
    as_of_ms: int,
    *,
    backfill: bool,
) -> str | None:
    """Why this run must plan everyone, or None when it may plan incrementally."""
    if last is None:
        return "no earlier planning"
    if backfill:
        return "backfill"
    if last.fingerprint != print_:
        return "configuration changed"
    if as_of_ms < last.as_of:
        return "as_of is before the last planning's"
    return None


def too_many(scope: int, planned: int) -> bool:
    """Whether a scope is large enough that planning everyone costs no more."""
    return planned >= SMALL and scope > MOST * planned
