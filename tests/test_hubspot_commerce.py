"""HubSpot events against the fake as commerce objects: orders and carts with line
items, associated with the contact, their properties, statuses and the cart's close
(what deals do alike is in test_hubspot_objects, with facts in test_hubspot_facts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.hubspot import HubSpotDestination
from crmsync.contract import Outcome
from crmsync.events import EventDestination, EventKind
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import CommerceObject, live, objects
from tests.hubspot_modes import SOURCE, event, make, push

__all__ = ["hubspot_fake"]


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot) -> Iterator[HubSpotDestination]:
    hubspot_fake.add_contact("ayse@example.com")
    destination = make(hubspot_fake)
    yield destination
    destination.close()


def one(fake: FakeHubSpot, kind: str) -> CommerceObject:
    found = live(fake, kind)
    assert len(found) == 1, found
    return found[0]


def linked(fake: FakeHubSpot, made: CommerceObject, kind: str) -> list[CommerceObject]:
    return [objects(fake, kind)[i] for k, i, _ in sorted(made.associations) if k == kind]


def test_hubspot_takes_events_under_its_object_names(dest: HubSpotDestination) -> None:
    assert isinstance(dest, EventDestination)
    assert dest.max_event_batch == 2000  # chunked into calls of 100 objects
    assert EventKind.ORDERED_PRODUCT not in dest.event_names()
    assert dest.event_names()[EventKind.PLACED_ORDER] == "order"


def test_a_placed_order_is_an_order_with_line_items_associated_with_the_contact(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    results = push(dest, event(EventKind.PLACED_ORDER))
    order = one(hubspot_fake, "orders")
    assert results["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert results["placed_order:shop_eu:1001"].remote_id == order.id
    assert order.properties == {
        "hs_order_name": "Order 1001",
        "hs_external_order_id": "1001",
        "hs_source_store": SOURCE,
        "hs_external_created_date": "2026-03-01T20:30:00.000Z",
        "hs_currency_code": "EUR",
        "hs_total_price": "72.5",
    }
    contact = hubspot_fake.contact("ayse@example.com")
    assert contact is not None
    assert ("contacts", contact.id, 507) in order.associations
    lines = linked(hubspot_fake, order, "line_items")
    assert {a[2] for a in order.associations if a[0] == "line_items"} == {513}
    assert sorted((li.properties["name"], li.properties["quantity"]) for li in lines) == [
        ("Linen shirt", "2"),
        ("Mug", "1"),
    ]
    shirt = next(li for li in lines if li.properties["name"] == "Linen shirt")
    assert shirt.properties["price"] == "30"
    assert shirt.properties["hs_sku"] == "p-1-M"
    assert shirt.properties["hs_line_item_currency_code"] == "EUR"


def test_statuses_update_the_order(dest: HubSpotDestination, hubspot_fake: FakeHubSpot) -> None:
    push(dest, event(EventKind.PLACED_ORDER))
    results = push(
        dest,
        event(EventKind.FULFILLED_ORDER, value=None, lines=()),
        event(EventKind.REFUNDED_ORDER, value="12.50", lines=()),
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    order = one(hubspot_fake, "orders")
    assert order.properties["hs_fulfillment_status"] == "fulfilled"
    assert order.properties["hs_payment_status"] == "refunded"
    cancelled = push(dest, event(EventKind.CANCELLED_ORDER, value=None, lines=()))
    assert cancelled["cancelled_order:shop_eu:1001"].outcome is Outcome.OK
    assert order.properties["hs_external_order_status"] == "cancelled"


def test_a_started_checkout_is_a_cart_and_a_closed_one_is_archived(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    url = "https://shop.example/checkout/c-9"
    started = push(dest, event(EventKind.STARTED_CHECKOUT, "c-9", checkout_url=url))
    cart = one(hubspot_fake, "carts")
    assert started["started_checkout:shop_eu:c-9"].remote_id == cart.id
    assert cart.properties["hs_cart_url"] == url
    assert cart.properties["hs_external_cart_id"] == "c-9"
    assert cart.properties["hs_total_price"] == "72.5"
    contact = hubspot_fake.contact("ayse@example.com")
    assert contact is not None and ("contacts", contact.id, 586) in cart.associations
    assert len(linked(hubspot_fake, cart, "line_items")) == 2
    assert {a[2] for a in cart.associations if a[0] == "line_items"} == {590}
    again = push(dest, event(EventKind.STARTED_CHECKOUT, "c-9", checkout_url=url))
    assert again["started_checkout:shop_eu:c-9"].outcome is Outcome.OK
    assert len(objects(hubspot_fake, "carts")) == 1
    closed = push(dest, event(EventKind.CHECKOUT_CLOSED, "c-9", value=None, lines=()))
    assert closed["checkout_closed:shop_eu:c-9"].outcome is Outcome.OK
    assert not live(hubspot_fake, "carts")
    gone = push(dest, event(EventKind.CHECKOUT_CLOSED, "c-9", value=None, lines=()))
    assert gone["checkout_closed:shop_eu:c-9"].outcome is Outcome.OK
