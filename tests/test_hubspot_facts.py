"""HubSpot events with the facts the core hands over (``EventFacts``), in both ways of
writing them (commerce objects, deals), counted at the fake: a contact id from the
people's ledger is not read again by e-mail, an order never sent is not searched for, a
status update or a checkout's close goes to the id the event ledger holds, a first sync
probes once whether a former database wrote there, a contact gone from HubSpot is read
again by e-mail; and each read is still made when its fact is not known."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from connectors.hubspot import HubSpotDestination
from crmsync.contract import Outcome
from crmsync.events import Event, EventFacts, EventKind, EventResult
from tests.builders import an_event
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import CommerceObject, live
from tests.hubspot_modes import (
    CHECKOUTS,
    DEALS,
    LINES_MADE,
    READ,
    SHIRT,
    SOURCE,
    Mode,
    make_deals,
    mode,
    with_cart_stages,
)

__all__ = ["hubspot_fake", "mode"]

event = partial(
    an_event, source=SOURCE, at=datetime(2026, 3, 1, 20, 30, tzinfo=UTC), currency="EUR"
)


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot, mode: Mode) -> Iterator[HubSpotDestination]:
    destination = mode.make(hubspot_fake)
    yield destination
    destination.close()


@pytest.fixture
def contact_id(hubspot_fake: FakeHubSpot) -> str:
    return hubspot_fake.add_contact("ayse@example.com").id


def known(
    made: Event,
    person: str | None = None,
    record: str | None = None,
    *,
    never_sent: bool = False,
    no_history: bool = False,
) -> Event:
    return replace(made, facts=EventFacts(person, record, never_sent, no_history))


def push(dest: HubSpotDestination, fake: FakeHubSpot, *events: Event) -> dict[str, EventResult]:
    fake.reset_counters()
    return {r.key: r for r in dest.push_events(events)}


def one_order(fake: FakeHubSpot, mode: Mode) -> CommerceObject:
    made = live(fake, mode.orders)
    assert len(made) == 1, made
    return made[0]


def new_order(contact: str | None, record: str = "1001", **facts: Any) -> Event:
    """A placed order of one line that the ledger says was never sent."""
    made = event(EventKind.PLACED_ORDER, record, lines=(SHIRT,))
    return known(made, contact, never_sent=True, **facts)


def test_a_new_order_of_a_known_person_is_written_without_a_read_or_a_search(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    placed = new_order(contact_id)
    results = push(dest, hubspot_fake, placed)
    order = one_order(hubspot_fake, mode)
    assert results[placed.key].outcome is Outcome.OK
    assert results[placed.key].remote_id == order.id
    assert ("contacts", contact_id, mode.to_contact) in order.associations
    assert mode.calls(hubspot_fake) == {LINES_MADE: 1, mode.call("create"): 1}


def test_without_the_contact_id_the_contact_is_read_by_email(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    placed = new_order(None)
    results = push(dest, hubspot_fake, placed)
    assert results[placed.key].outcome is Outcome.OK
    assert ("contacts", contact_id, mode.to_contact) in one_order(hubspot_fake, mode).associations
    assert mode.calls(hubspot_fake) == {READ: 1, LINES_MADE: 1, mode.call("create"): 1}


def test_an_order_sent_before_is_searched_for_and_not_made_twice(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    placed = event(EventKind.PLACED_ORDER, lines=(SHIRT,))
    first = push(dest, hubspot_fake, known(placed, contact_id, never_sent=True))
    # its answer was lost (a crash, a timeout): the ledger has it in flight, not never sent
    again = push(dest, hubspot_fake, known(placed, contact_id, never_sent=False))
    assert again[placed.key].outcome is Outcome.OK
    assert again[placed.key].remote_id == first[placed.key].remote_id
    assert mode.calls(hubspot_fake) == {mode.call("search"): 1}
    assert len(live(hubspot_fake, mode.orders)) == 1
    assert len(live(hubspot_fake, "line_items")) == 1


def test_a_status_goes_to_the_order_id_the_ledger_holds_without_a_search(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    placed = known(event(EventKind.PLACED_ORDER), contact_id, never_sent=True)
    order_id = push(dest, hubspot_fake, placed)[placed.key].remote_id
    assert order_id is not None
    fulfilled = event(EventKind.FULFILLED_ORDER, value=None)
    results = push(dest, hubspot_fake, known(fulfilled, contact_id, order_id))
    assert results[fulfilled.key].outcome is Outcome.OK
    name, value = mode.fulfilled
    assert one_order(hubspot_fake, mode).properties[name] == value
    assert mode.calls(hubspot_fake) == {mode.call("update"): 1}

    refunded = event(EventKind.REFUNDED_ORDER, value="5")  # the order's id not known
    results = push(dest, hubspot_fake, known(refunded, contact_id))
    assert results[refunded.key].outcome is Outcome.OK
    name, value = mode.refunded
    assert one_order(hubspot_fake, mode).properties[name] == value
    assert mode.calls(hubspot_fake) == {mode.call("search"): 1, mode.call("update"): 1}


def test_a_status_of_an_order_never_sent_fails_without_a_call(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    cancelled = known(
        event(EventKind.CANCELLED_ORDER, "77", value=None), contact_id, None, never_sent=True
    )
    results = push(dest, hubspot_fake, cancelled)
    assert results[cancelled.key].outcome is Outcome.FAILED
    assert "order 77" in results[cancelled.key].message
    assert mode.calls(hubspot_fake) == {}


def test_a_closed_checkout_archives_the_object_the_ledger_holds_without_a_search(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    started = known(
        event(EventKind.STARTED_CHECKOUT, "c-9", checkout_url="https://shop.example/c-9"),
        contact_id,
        never_sent=True,
    )
    cart_id = push(dest, hubspot_fake, started)[started.key].remote_id
    assert cart_id is not None
    assert mode.calls(hubspot_fake) == {mode.call("create", mode.carts): 1}
    closed = known(event(EventKind.CHECKOUT_CLOSED, "c-9", value=None), contact_id, cart_id)
    results = push(dest, hubspot_fake, closed)
    assert results[closed.key].outcome is Outcome.OK
    assert not live(hubspot_fake, mode.carts)
    assert mode.calls(hubspot_fake) == {mode.call("archive", mode.carts): 1}


def test_a_first_sync_probes_once_per_object_type_and_then_trusts_the_ledger(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    made = {LINES_MADE: 1, mode.call("create"): 1}
    push(
        dest,
        hubspot_fake,
        new_order(contact_id, "1", no_history=True),
        new_order(contact_id, "2", no_history=True),
    )
    assert mode.calls(hubspot_fake) == {mode.call("search"): 1, **made}
    push(dest, hubspot_fake, new_order(contact_id, "3", no_history=True))  # none there: no probe
    assert mode.calls(hubspot_fake) == made
    assert len(live(hubspot_fake, mode.orders)) == 3


def test_orders_another_state_database_made_are_found_by_a_first_sync(
    hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    """A lost or replaced state database: its first sync must not make the orders again."""
    placed = event(EventKind.PLACED_ORDER, lines=(SHIRT,))
    earlier = mode.make(hubspot_fake)
    made = earlier.push_events([placed])[0].remote_id
    earlier.close()
    fresh = mode.make(hubspot_fake)
    try:
        batch = [new_order(contact_id, r, no_history=True) for r in ("1001", "1002")]
        results = push(fresh, hubspot_fake, *batch)
    finally:
        fresh.close()
    assert results[placed.key].outcome is Outcome.OK and results[placed.key].remote_id == made
    assert results[batch[1].key].outcome is Outcome.OK
    ids = sorted(o.properties[mode.order_id] for o in live(hubspot_fake, mode.orders))
    assert ids == ["1001", "1002"]
    assert mode.calls(hubspot_fake)[mode.call("search")] == 2  # the probe, then the search


def test_a_contact_id_gone_from_hubspot_is_read_again_by_email(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    """The ledger's id names a contact merged or deleted in HubSpot since the push."""
    placed = new_order("999999")
    results = push(dest, hubspot_fake, placed)
    assert results[placed.key].outcome is Outcome.OK
    order = one_order(hubspot_fake, mode)
    assert ("contacts", contact_id, mode.to_contact) in order.associations
    assert len([a for a in order.associations if a[0] == "line_items"]) == 1
    assert len(live(hubspot_fake, "line_items")) == 1  # its line items were made once
    assert mode.calls(hubspot_fake) == {LINES_MADE: 1, mode.call("create"): 2, READ: 1}


def test_a_large_batch_takes_one_call_per_hundred_objects_of_each_kind(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot, mode: Mode, contact_id: str
) -> None:
    results = push(dest, hubspot_fake, *(new_order(contact_id, str(i)) for i in range(250)))
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert len(live(hubspot_fake, mode.orders)) == 250
    assert mode.calls(hubspot_fake) == {LINES_MADE: 3, mode.call("create"): 3}
    assert not hubspot_fake.violations


@pytest.mark.parametrize("from_ledger", [True, False], ids=["ledger contact", "read contact"])
def test_a_create_refused_whole_is_tried_once_more_only_for_a_ledger_contact(
    dest: HubSpotDestination,
    hubspot_fake: FakeHubSpot,
    mode: Mode,
    contact_id: str,
    from_ledger: bool,
) -> None:
    """Should HubSpot refuse a whole call for one contact gone, the others still go once
    their contacts are read by e-mail; a contact read by e-mail already is not read
    again, and the refusal stands."""
    hubspot_fake.inject(400, method="POST", path=f"/crm/v3/objects/{mode.orders}/batch/create")
    placed = new_order(contact_id if from_ledger else None)
    results = push(dest, hubspot_fake, placed)
    made = live(hubspot_fake, mode.orders)
    if from_ledger:
        assert results[placed.key].outcome is Outcome.OK
        assert ("contacts", contact_id, mode.to_contact) in made[0].associations
    else:
        assert results[placed.key].outcome is Outcome.REJECTED and not made
    creates = 2 if from_ledger else 1
    assert mode.calls(hubspot_fake) == {READ: 1, LINES_MADE: 1, mode.call("create"): creates}


def test_a_deal_checkout_moved_to_its_closed_stage_goes_to_the_ledgers_id(
    hubspot_fake: FakeHubSpot, contact_id: str
) -> None:
    dest = make_deals(
        with_cart_stages(hubspot_fake), **CHECKOUTS, closed_checkout_stage="recovered"
    )
    try:
        started = known(event(EventKind.STARTED_CHECKOUT, "c-9"), contact_id, never_sent=True)
        deal_id = push(dest, hubspot_fake, started)[started.key].remote_id
        assert deal_id is not None
        closed = known(event(EventKind.CHECKOUT_CLOSED, "c-9", value=None), contact_id, deal_id)
        results = push(dest, hubspot_fake, closed)
    finally:
        dest.close()
    assert results[closed.key].outcome is Outcome.OK and results[closed.key].remote_id == deal_id
    assert one_order(hubspot_fake, DEALS).properties["dealstage"] == "recovered"
    assert DEALS.calls(hubspot_fake) == {DEALS.call("update"): 1}
