"""Pushing events: each destination that takes events gets the run's derived events
it takes, a batch at a time, after the run's people push (so a person exists at the
destination before their events do).

Per batch, as for people (``engine.push``): the events are marked in flight (one
transaction), the destination is called, and its answers are recorded (one
transaction). Before a batch is cut, events the destination acknowledged are dropped,
and so are those waiting for a retry not yet due or refused. Batches are cut at fixed
positions of the filtered stream, so a re-run after a crash rebuilds the batch that was
in flight. The derivation's cursor moves only when every destination took everything
(none stopped, none was full): otherwise the next run derives the same records again,
and the ledger keeps it from sending anything twice.

A destination that wants them (``wants_event_facts``) gets each event with what the
state store knows of it there (``EventFacts``), read just before the batch is marked in
flight: the person's id from the people's ledger, the order's or cart's id from its
acknowledged opening event, and whether any event of the record was ever sent there. A
batch whose ``push_events`` raised stays in flight: the destination may have written
part of it before it stopped, so no later batch may call its records never sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson

from crmsync.config import PipelineSpec
from crmsync.contract import Outcome
from crmsync.errors import ConfigError, ConnectorError, SendLater
from crmsync.events import Event, EventDestination, EventFacts, EventKind, EventResult
from crmsync.runs import EventReport, RunOptions, RunReport
from engine.events import closings, derive, plan_window
from state.events import (
    acknowledged,
    event_cursor,
    failure_states,
    has_event_history,
    mark_in_flight,
    person_remote_ids,
    record_histories,
    record_ref,
    record_results,
    set_event_cursor,
)
from state.ledger import RetryPolicy
from state.store import Store
from state.timeutil import now_ms

FILTER_CHUNK = 500  # derived events looked up in the ledger at a time


def event_hash(event: Event) -> str:
    """A digest of everything an event carries (a changed payload resets its attempts);
    its facts at a destination are not part of it."""
    body = orjson.dumps(replace(event, facts=None), default=_plain, option=orjson.OPT_SORT_KEYS)
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)  # Decimal


READY = "ready"  # what ``triage`` says of an event the destination should be sent now


def triage(store: Store, name: str, events: Sequence[Event]) -> Iterator[tuple[Event, str]]:
    """Each event with what the ledger of destination ``name`` says of it:
    "already_sent" (acknowledged), "waiting" (a failure not yet due, or a refusal) or
    ``READY``. The run sends what is ready; ``plan`` counts it."""
    keys = [e.key for e in events]
    now = now_ms()
    with store.engine.connect() as conn:
        done = acknowledged(conn, name, keys)
        failures = failure_states(conn, name, keys)
    for event in events:
        failure = failures.get(event.key)
        if event.key in done:
            yield event, "already_sent"
        elif failure is not None and (
            failure.next_attempt_at is None or failure.next_attempt_at > now
        ):
            yield event, "waiting"
        else:
            yield event, READY


@dataclass
class EventSender:
    """One destination's events in a run: filtered by the ledger, batched, sent,
    recorded."""

    name: str
    destination: EventDestination
    kinds: frozenset[EventKind]
    store: Store
    report: EventReport
    run_id: int | None
    retry: RetryPolicy
    backfill: bool = False  # a backfill claims no record never sent (``EventFacts``)
    _raw: list[Event] = field(default_factory=list)
    _ready: list[Event] = field(default_factory=list)
    _no_history: bool | None = None  # read once, before the run's first batch

    @property
    def stopped(self) -> bool:
        return self.report.error is not None

    def add(self, event: Event) -> None:
        if event.kind not in self.kinds:
            return
        if self.stopped:
            self.report.counts["not_sent"] += 1
            return
        self._raw.append(event)
        if len(self._raw) >= FILTER_CHUNK:
            self._filter()
        batch = max(1, self.destination.max_event_batch)
        while len(self._ready) >= batch and not self.stopped:
            self._send(self._ready[:batch])
            del self._ready[:batch]

    def flush(self) -> None:
        self._filter()
        batch = max(1, self.destination.max_event_batch)
        while self._ready:
            if self.stopped:
                self.report.counts["not_sent"] += len(self._ready)
                self._ready.clear()
                break
            self._send(self._ready[:batch])
            del self._ready[:batch]

    def _filter(self) -> None:
        if not self._raw:
            return
        for event, state in triage(self.store, self.name, self._raw):
            if state == READY:
                self._ready.append(event)
            else:
                self.report.counts[state] += 1
        self._raw.clear()

    def _send(self, batch: Sequence[Event]) -> None:
        hashes = [event_hash(e) for e in batch]
        if getattr(self.destination, "wants_event_facts", False) is True:
            batch = self._with_facts(batch)  # before the batch itself is in flight
        with self.store.transaction() as conn:
            mark_in_flight(conn, self.name, self.run_id, batch, now_ms())
        stopped = True  # push_events raised: the batch may be partly sent, stays in flight
        try:
            results = self.destination.push_events(batch)
            stopped = False
        except SendLater as exc:
            results = [EventResult(e.key, Outcome.NOT_SENT, message=str(exc)) for e in batch]
        except (ConfigError, ConnectorError) as exc:
            self.report.error = str(exc)
            results = [EventResult(e.key, Outcome.NOT_SENT, message=str(exc)) for e in batch]
        if stopped:
            counts = {Outcome.NOT_SENT.value: len(batch)}
        else:
            with self.store.transaction() as conn:
                counts = record_results(
                    conn,
                    self.name,
                    self.run_id,
                    batch,
                    hashes,
                    results,
                    now_ms=now_ms(),
                    retry=self.retry,
                )
        self.report.counts.update(counts)
        answered = {r.key: r.outcome for r in results}
        for event in batch:
            if answered.get(event.key) is Outcome.OK:
                self.report.kinds[event.kind.value] += 1
        if counts.get(Outcome.NOT_SENT.value) and self.report.error is None:
            message = next((r.message for r in results if r.outcome is Outcome.NOT_SENT), "")
            self.report.error = message or f"{self.name} can take no more events now"
            self.report.full = True

    def _with_facts(self, batch: Sequence[Event]) -> list[Event]:
        """The batch, each event with what the state store knows of it here."""
        persons = sorted({e.person_key for e in batch if e.person_key})
        with self.store.engine.connect() as conn:
            if self._no_history is None:
                self._no_history = not has_event_history(conn, self.name)
            people = person_remote_ids(conn, self.name, persons)
            sent = record_histories(conn, self.name, [record_ref(e) for e in batch])
        out = []
        for event in batch:
            ref = record_ref(event)
            facts = EventFacts(
                person_remote_id=people.get(event.person_key),
                record_remote_id=sent.get(ref),
                record_never_sent=ref not in sent and not self.backfill,
                no_history=self._no_history,
            )
            out.append(replace(event, facts=facts))
        return out


def event_destinations(
    spec: PipelineSpec, destinations: Mapping[str, object], report: RunReport
) -> dict[str, tuple[EventDestination, frozenset[EventKind]]]:
    """The pipeline's destinations that take events, with the kinds each is sent: those
    it names (``event_names``) and the pipeline's ``event_kinds`` allow."""
    wanted = set(spec.settings.event_kinds or EventKind)
    out: dict[str, tuple[EventDestination, frozenset[EventKind]]] = {}
    for name, destination in destinations.items():
        if not isinstance(destination, EventDestination):
            report.warnings.append(f"{name} takes no events: none sent to it")
            continue
        kinds = frozenset(k for k in destination.event_names() if k in wanted)
        if kinds:
            out[name] = (destination, kinds)
    return out


def push_events(
    store: Store,
    spec: PipelineSpec,
    destinations: Mapping[str, object],
    options: RunOptions,
    report: RunReport,
    retry: RetryPolicy,
    blocked: Mapping[str, str] | None = None,
) -> None:
    """Derives the run's events and sends each destination the ones it still needs;
    moves the derivation's cursor when every destination took them all. ``blocked``:
    destinations to send nothing this run, with why."""
    taking = event_destinations(spec, destinations, report)
    if not taking:
        return
    sources = [s.name for s in spec.sources]
    with store.engine.connect() as conn:
        cursor = event_cursor(conn, spec.name)
    since = options.since if options.events and options.kind == "backfill" else None
    window = plan_window(
        store,
        sources,
        cursor,
        report.as_of,
        spec.settings.profile.abandoned_cart_hours,
        since,
        spec.settings.events_live_hours,
        spec.settings.cart_expiry_days,
    )
    senders = []
    for name, (destination, kinds) in taking.items():
        event_report = report.events[name] = EventReport(name)
        event_report.error = (blocked or {}).get(name)
        senders.append(
            EventSender(
                name,
                destination,
                kinds,
                store,
                event_report,
                report.run_id,
                retry,
                backfill=since is not None,
            )
        )
    _feed(senders, derive(store, sources, list(taking), window, now_ms()))
    for sender in senders:
        if EventKind.CHECKOUT_CLOSED in sender.kinds and not sender.stopped:
            closed = closings(store, sender.name, sources, spec.currency, window, now_ms())
            _feed([sender], closed)
    if all(not s.stopped for s in senders):
        with store.transaction() as conn:
            set_event_cursor(conn, spec.name, window.staged_upto, window.as_of, now_ms())
    else:
        report.warnings.append("events: not every destination took them; the next run resumes")


def _feed(senders: Sequence[EventSender], events: Iterable[Event]) -> None:
    for event in events:
        for sender in senders:
            sender.add(event)
    for sender in senders:
        sender.flush()
