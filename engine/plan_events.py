"""What a run would send as events, sending and recording nothing: per destination and
kind for ``plan``, and one person's pending events, with their keys and times, for
``plan --person``.

It is the run's own derivation (``engine.events``: the same window from the pipeline's
event cursor, the same retries, the same closings) and the run's own filter (what a
destination acknowledged is already sent; a failure not yet due, or a refusal, waits),
so what ``plan`` counts is what the next run hands each destination, as of the plan's
time. Only the state database is read: the ledger, the cursor and the staged records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmsync.config import PipelineSpec
from crmsync.events import Event, EventKind
from crmsync.runs import EventReport, RunReport
from engine.events import closings, derive, plan_window
from engine.push_events import READY, event_destinations, triage
from state.events import event_cursor
from state.store import Store
from state.timeutil import now_ms

CHUNK = 500  # derived events looked up in the ledger at a time
WOULD_SEND = "would_send"


@dataclass
class PendingEvents:
    """One destination's share of a planned run's events."""

    name: str
    store: Store
    kinds: frozenset[EventKind]
    names: Mapping[EventKind, str]  # what the destination calls each kind
    report: EventReport  # counts: would_send, already_sent, waiting; kinds: would_send
    keep: bool = False  # keep the events themselves (one person's)
    events: list[Event] = field(default_factory=list)
    _raw: list[Event] = field(default_factory=list)

    def add(self, event: Event) -> None:
        if event.kind in self.kinds:
            self._raw.append(event)
            if len(self._raw) >= CHUNK:
                self.flush()

    def flush(self) -> None:
        """Sorts the events gathered so far by what the ledger holds of them."""
        if not self._raw:
            return
        for event, state in triage(self.store, self.name, self._raw):
            if state != READY:
                self.report.counts[state] += 1
            else:
                self.report.counts[WOULD_SEND] += 1
                self.report.kinds[event.kind.value] += 1
                if self.keep:
                    self.events.append(event)
        self._raw.clear()


def plan_events(
    store: Store,
    spec: PipelineSpec,
    destinations: Mapping[str, object],
    report: RunReport,
) -> None:
    """``plan``: per destination that takes events, what the next run would send it
    (``report.events``, counted per kind) beside what it has and what waits."""
    for pending in _pending(store, spec, destinations, report, None):
        report.events[pending.name] = pending.report


def person_events(
    store: Store,
    spec: PipelineSpec,
    destinations: Mapping[str, object],
    as_of: datetime,
    person: str,
) -> dict[str, dict[str, Any]]:
    """``plan --person``: per destination that takes events, the person's events the
    next run would send it (key, kind, its name there, time, value), and how many of
    theirs it already has or that wait for a retry."""
    report = RunReport(spec.name, None, "manual", True, as_of)
    out: dict[str, dict[str, Any]] = {}
    for pending in _pending(store, spec, destinations, report, person):
        counts = pending.report.counts
        out[pending.name] = {
            "already_sent": counts["already_sent"],
            "waiting": counts["waiting"],
            "events": [_shown(e, pending.names) for e in pending.events],
        }
    return out


def _pending(
    store: Store,
    spec: PipelineSpec,
    destinations: Mapping[str, object],
    report: RunReport,
    person: str | None,
) -> list[PendingEvents]:
    taking = event_destinations(spec, destinations, report)
    if not taking:
        return []
    keep = person is not None
    pending = [
        PendingEvents(name, store, kinds, destination.event_names(), EventReport(name), keep)
        for name, (destination, kinds) in taking.items()
    ]
    sources = [s.name for s in spec.sources]
    with store.engine.connect() as conn:
        cursor = event_cursor(conn, spec.name)
    window = plan_window(
        store,
        sources,
        cursor,
        report.as_of,
        spec.settings.profile.abandoned_cart_hours,
        None,
        spec.settings.events_live_hours,
        spec.settings.cart_expiry_days,
    )
    _feed(pending, derive(store, sources, list(taking), window, now_ms(), person))
    for p in pending:
        if EventKind.CHECKOUT_CLOSED in p.kinds:
            closed = closings(store, p.name, sources, spec.currency, window, now_ms(), person)
            _feed([p], closed)
    return pending


def _feed(pending: Sequence[PendingEvents], events: Iterable[Event]) -> None:
    for event in events:
        for p in pending:
            p.add(event)
    for p in pending:
        p.flush()


def _shown(event: Event, names: Mapping[EventKind, str]) -> dict[str, Any]:
    return {
        "key": event.key,
        "kind": event.kind.value,
        "name": names.get(event.kind, event.kind.value),
        "occurred_at": event.occurred_at.isoformat(),
        "historical": event.historical,
        "value": None if event.value is None else str(event.value),
        "currency": event.currency,
    }
