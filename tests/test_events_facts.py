"""The facts the core hands a destination with each event (``EventFacts``), from the
state store: the person's id from the people's ledger, the order's id from its
acknowledged placed order, whether any event of the record was ever sent there, and
whether the database ever sent that destination anything. A batch whose push raised
stays in flight, so its records are never called never sent afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

import pytest
from sqlalchemy import select

from crmsync.contract import Outcome
from crmsync.errors import ConnectorError
from crmsync.events import Event, EventFacts, EventKind, EventResult
from crmsync.runs import EventReport
from engine.push_events import EventSender, event_hash
from state import schema
from state.ledger import RetryPolicy
from state.store import Store
from tests.builders import an_event

DEST = "vendor"
event = partial(
    an_event, source="shop", at=datetime(2026, 3, 1, 20, 30, tzinfo=UTC), currency="TRY"
)
PLACED = event(EventKind.PLACED_ORDER, "1")
FULFILLED = event(EventKind.FULFILLED_ORDER, "1", value=None)
OTHER = event(EventKind.PLACED_ORDER, "2", email="can@example.com")
CART = event(EventKind.STARTED_CHECKOUT, "1")  # a cart with the same id as order 1


class Recorder:
    """A destination that keeps what it was handed; answers OK with an id per record,
    or as ``answer`` says; raises ``ConnectorError`` while ``broken``."""

    max_event_batch = 2

    def __init__(self, wants: bool = True) -> None:
        self.wants_event_facts = wants
        self.seen: list[Event] = []
        self.answer: Mapping[str, Outcome] = {}
        self.broken = False

    def event_names(self) -> Mapping[EventKind, str]:
        return {kind: kind.value for kind in EventKind}

    def push_events(self, events: Sequence[Event]) -> list[EventResult]:
        self.seen.extend(events)
        if self.broken:
            raise ConnectorError("the vendor stopped answering part-way")
        return [
            EventResult(e.key, self.answer.get(e.key, Outcome.OK), f"id-{e.record_id}")
            for e in events
        ]

    def facts(self, key: str) -> EventFacts | None:
        return [e for e in self.seen if e.key == key][-1].facts


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    made = Store(state_url)
    yield made
    made.close()


def run(store: Store, destination: Recorder, *events: Event, backfill: bool = False) -> None:
    sender = EventSender(
        DEST,
        destination,
        frozenset(EventKind),
        store,
        EventReport(DEST),
        None,
        RetryPolicy(max_attempts=5, first_wait_ms=0),
        backfill=backfill,
    )
    for made in events:
        sender.add(made)
    sender.flush()


def person_pushed(store: Store, person_key: str, remote_id: str, status: str = "synced") -> None:
    with store.transaction() as conn:
        conn.execute(
            schema.ledger.insert().values(
                destination=DEST,
                person_key=person_key,
                payload_hash="0" * 32,
                memberships="",
                remote_id=remote_id,
                status=status,
                acked_at=0,
            )
        )


def test_a_first_run_hands_the_people_ledger_ids_and_calls_every_record_never_sent(
    store: Store,
) -> None:
    person_pushed(store, PLACED.person_key, "contact-7")
    person_pushed(store, OTHER.person_key, "contact-8", status="archived")
    dest = Recorder()
    run(store, dest, PLACED, OTHER)
    assert dest.facts(PLACED.key) == EventFacts("contact-7", None, True, True)
    assert dest.facts(OTHER.key) == EventFacts(None, None, True, True)  # archived: no id


def test_a_later_event_gets_the_id_its_placed_order_was_acknowledged_with(
    store: Store,
) -> None:
    dest = Recorder()
    run(store, dest, PLACED, OTHER)
    run(store, dest, FULFILLED, CART)
    assert dest.facts(FULFILLED.key) == EventFacts(None, "id-1", False, False)
    assert dest.facts(CART.key) == EventFacts(None, None, True, False)  # a cart, not order 1


def test_the_same_run_hands_a_later_batch_the_ids_of_an_earlier_one(store: Store) -> None:
    dest = Recorder()
    run(store, dest, PLACED, OTHER, FULFILLED)  # two batches: the second sees the first
    assert dest.facts(FULFILLED.key) == EventFacts(None, "id-1", False, True)


def test_a_refused_or_failed_event_makes_its_record_sent_before(store: Store) -> None:
    dest = Recorder()
    dest.answer = {PLACED.key: Outcome.FAILED, OTHER.key: Outcome.REJECTED}
    run(store, dest, PLACED, OTHER)
    run(store, dest, FULFILLED, event(EventKind.CANCELLED_ORDER, "2", value=None))
    assert dest.facts(FULFILLED.key) == EventFacts(None, None, False, False)
    assert dest.facts("cancelled_order:shop:2") == EventFacts(None, None, False, False)


def test_a_batch_whose_push_raised_stays_in_flight_and_is_not_never_sent_again(
    store: Store,
) -> None:
    dest = Recorder()
    dest.broken = True
    run(store, dest, PLACED)
    with store.engine.connect() as conn:
        flying = conn.execute(select(schema.event_in_flight.c.event_key)).scalars().all()
    assert flying == [PLACED.key]  # the vendor may have written part of it
    dest.broken = False
    run(store, dest, PLACED)
    assert dest.facts(PLACED.key) == EventFacts(None, None, False, False)
    with store.engine.connect() as conn:
        assert not conn.execute(select(schema.event_in_flight.c.event_key)).all()


def test_another_destination_history_does_not_count(store: Store) -> None:
    dest = Recorder()
    run(store, dest, PLACED)
    with store.transaction() as conn:
        conn.execute(schema.event_ledger.update().values(destination="elsewhere"))
    run(store, dest, FULFILLED)
    assert dest.facts(FULFILLED.key) == EventFacts(None, None, True, True)


def test_a_backfill_calls_no_record_never_sent(store: Store) -> None:
    dest = Recorder()
    run(store, dest, PLACED, backfill=True)
    assert dest.facts(PLACED.key) == EventFacts(None, None, False, True)


def test_a_destination_that_wants_no_facts_gets_none_and_the_digest_ignores_them(
    store: Store,
) -> None:
    dest = Recorder(wants=False)
    run(store, dest, PLACED)
    assert dest.facts(PLACED.key) is None
    with store.engine.connect() as conn:
        stored = conn.execute(select(schema.event_ledger.c.payload_hash)).scalar_one()
    assert stored == event_hash(PLACED)
    with_facts = Recorder()
    run(store, with_facts, FULFILLED)
    handed = with_facts.seen[0]
    assert handed.facts is not None and event_hash(handed) == event_hash(FULFILLED)
