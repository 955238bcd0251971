"""HubSpot events against the fake: orders and carts as commerce objects with line
items, associated with the contact; statuses, cart close, resends, refusals, limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connectors.http import BudgetRegistry
from connectors.hubspot import HubSpotConfig, HubSpotDestination
from crmsync.contract import ConnectorContext, Outcome
from crmsync.errors import AuthError
from crmsync.events import Event, EventDestination, EventKind, EventLine, EventResult
from tests.builders import an_event
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import CommerceObject, live, objects

__all__ = ["hubspot_fake"]

CONTEXT = ConnectorContext("hubspot_events", Path("."))
SOURCE = "shop_eu"
ISTANBUL = ZoneInfo("Europe/Istanbul")
PLACED = datetime(2026, 3, 1, 23, 30, tzinfo=ISTANBUL)  # 20:30 UTC: the true instant
SHIRT = EventLine("p-1", "Linen shirt", 2, Decimal("30.00"), sku="p-1-M")
MUG = EventLine("p-2", "Mug", 1, Decimal("12.50"))
ORDER_CREATE = ("POST", "create_orders")
LINES_CREATE = ("POST", "create_line_items")


event = partial(an_event, source=SOURCE, at=PLACED, currency="EUR", lines=(SHIRT, MUG))


def make(fake: FakeHubSpot, **table: Any) -> HubSpotDestination:
    config = HubSpotConfig.model_validate(
        {
            "access_token": fake.token,
            "base_url": fake.base_url,
            "http": {"retry": {"backoff_initial": 0.0, "backoff_max": 0.0}},
            **table,
        }
    )
    budgets = BudgetRegistry(sleep=lambda s: None)
    return HubSpotDestination(config, CONTEXT, sleep=lambda s: None, budgets=budgets)


@pytest.fixture
def dest(hubspot_fake: FakeHubSpot) -> Iterator[HubSpotDestination]:
    hubspot_fake.add_contact("ayse@example.com")
    destination = make(hubspot_fake)
    yield destination
    destination.close()


def push(dest: HubSpotDestination, *events: Event) -> dict[str, EventResult]:
    results = dest.push_events(events)
    assert sorted(r.key for r in results) == sorted(e.key for e in events)
    return {r.key: r for r in results}


def one(fake: FakeHubSpot, kind: str) -> CommerceObject:
    found = live(fake, kind)
    assert len(found) == 1, found
    return found[0]


def linked(fake: FakeHubSpot, made: CommerceObject, kind: str) -> list[CommerceObject]:
    return [objects(fake, kind)[i] for k, i, _ in sorted(made.associations) if k == kind]


def test_hubspot_takes_events_under_its_object_names(dest: HubSpotDestination) -> None:
    assert isinstance(dest, EventDestination)
    assert dest.max_event_batch == 100
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


def test_a_resent_order_finds_the_one_made_and_creates_nothing(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    first = push(dest, event(EventKind.PLACED_ORDER))
    hubspot_fake.reset_counters()
    again = push(dest, event(EventKind.PLACED_ORDER), event(EventKind.PLACED_ORDER))
    key = "placed_order:shop_eu:1001"
    assert again[key].outcome is Outcome.OK and again[key].remote_id == first[key].remote_id
    assert len(live(hubspot_fake, "orders")) == 1 and len(live(hubspot_fake, "line_items")) == 2
    assert hubspot_fake.calls[ORDER_CREATE] == 0 and hubspot_fake.calls[LINES_CREATE] == 0


def test_an_order_whose_answer_was_lost_is_not_made_twice(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    hubspot_fake.inject(
        500, method="POST", path="/crm/v3/objects/orders/batch/create", after=True, times=9
    )
    lost = push(dest, event(EventKind.PLACED_ORDER))
    assert lost["placed_order:shop_eu:1001"].outcome is Outcome.FAILED
    hubspot_fake.faults.pending.clear()
    again = push(dest, event(EventKind.PLACED_ORDER))
    assert again["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert len(live(hubspot_fake, "orders")) == 1


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


def test_a_status_for_an_order_never_sent_fails_for_a_later_run(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    results = push(dest, event(EventKind.REFUNDED_ORDER, "404", value="5", lines=()))
    found = results["refunded_order:shop_eu:404"]
    assert found.outcome is Outcome.FAILED and "no order 404" in found.message
    assert not live(hubspot_fake, "orders")


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


def test_no_contact_yet_or_no_email_is_rejected_with_the_reason(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    results = push(
        dest,
        event(EventKind.PLACED_ORDER, "1", email="nobody@example.com"),
        event(EventKind.STARTED_CHECKOUT, "c-1", email=None),
        event(EventKind.ORDERED_PRODUCT, "1", lines=(SHIRT,)),
        event(EventKind.PLACED_ORDER, "2"),
    )
    assert results["placed_order:shop_eu:1"].outcome is Outcome.REJECTED
    assert "no contact with this e-mail" in results["placed_order:shop_eu:1"].message
    assert results["started_checkout:shop_eu:c-1"].outcome is Outcome.REJECTED
    assert "e-mail" in results["started_checkout:shop_eu:c-1"].message
    assert results["ordered_product:shop_eu:1"].outcome is Outcome.REJECTED
    assert results["placed_order:shop_eu:2"].outcome is Outcome.OK
    assert [o.properties["hs_external_order_id"] for o in live(hubspot_fake, "orders")] == ["2"]
    assert len(live(hubspot_fake, "line_items")) == 2


def test_a_past_checkout_of_a_backfill_is_not_made_a_cart(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    results = push(dest, event(EventKind.STARTED_CHECKOUT, "c-1", historical=True))
    assert results["started_checkout:shop_eu:c-1"].outcome is Outcome.OK
    assert not objects(hubspot_fake, "carts") and not objects(hubspot_fake, "line_items")


def test_a_full_batch_takes_one_call_per_hundred_objects(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    for i in range(100):
        hubspot_fake.add_contact(f"p{i}@example.com")
    hubspot_fake.reset_counters()
    batch = [
        event(EventKind.PLACED_ORDER, str(i), email=f"p{i}@example.com", lines=(SHIRT,))
        for i in range(100)
    ]
    results = push(dest, *batch)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert len(live(hubspot_fake, "orders")) == 100
    # contacts read, orders searched, line items created, orders created: one call each
    assert sum(hubspot_fake.calls.values()) == 4
    assert hubspot_fake.calls[ORDER_CREATE] == 1 and hubspot_fake.calls[LINES_CREATE] == 1
    assert not hubspot_fake.violations


def test_lines_beyond_a_hundred_go_in_more_calls(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    hubspot_fake.reset_counters()
    batch = [event(EventKind.PLACED_ORDER, str(i), lines=(SHIRT, MUG, SHIRT)) for i in range(40)]
    results = push(dest, *batch)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert hubspot_fake.calls[LINES_CREATE] == 2  # 120 line items
    assert len(live(hubspot_fake, "line_items")) == 120
    for order in live(hubspot_fake, "orders"):
        assert len(linked(hubspot_fake, order, "line_items")) == 3


def test_a_rate_limited_call_is_retried_after_its_wait(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    hubspot_fake.inject(429, method="POST", path="/crm/v3/objects/orders/batch/create")
    results = push(dest, event(EventKind.PLACED_ORDER))
    assert results["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert hubspot_fake.calls[ORDER_CREATE] == 2
    assert len(live(hubspot_fake, "orders")) == 1


def test_a_missing_scope_is_an_error_naming_the_scopes(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    hubspot_fake.inject(403, method="POST", path="/crm/v3/objects/orders/search")
    with pytest.raises(AuthError, match=r"crm\.objects\.orders\.write"):
        dest.push_events([event(EventKind.PLACED_ORDER)])


def test_deals_are_refused_in_the_configuration(hubspot_fake: FakeHubSpot) -> None:
    with pytest.raises(ValidationError, match="not built yet"):
        HubSpotConfig.model_validate(
            {"access_token": hubspot_fake.token, "events": {"objects": "deals"}}
        )


def test_a_refused_create_rejects_its_events_and_a_server_error_fails_them(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    hubspot_fake.inject(400, method="POST", path="/crm/v3/objects/orders/batch/create")
    refused = push(dest, event(EventKind.PLACED_ORDER, "1"))
    assert refused["placed_order:shop_eu:1"].outcome is Outcome.REJECTED
    assert "refused by HubSpot" in refused["placed_order:shop_eu:1"].message
    hubspot_fake.inject(503, method="POST", path="/crm/v3/objects/line_items/batch/create")
    failed = push(dest, event(EventKind.PLACED_ORDER, "2"))
    assert failed["placed_order:shop_eu:2"].outcome is Outcome.FAILED
    assert hubspot_fake.calls[LINES_CREATE] == 2  # the 503 was not resent
    assert not live(hubspot_fake, "orders")


def test_an_order_and_its_fulfilment_in_one_batch_need_no_second_search(
    dest: HubSpotDestination, hubspot_fake: FakeHubSpot
) -> None:
    results = push(
        dest,
        event(EventKind.PLACED_ORDER),
        event(EventKind.FULFILLED_ORDER, value=None, lines=()),
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert one(hubspot_fake, "orders").properties["hs_fulfillment_status"] == "fulfilled"
    assert hubspot_fake.calls[("POST", "search_orders")] == 1
