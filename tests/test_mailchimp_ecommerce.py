"""Mailchimp e-commerce events against the fake: stores, orders with lines, statuses, carts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.mailchimp import MailchimpConfig, MailchimpDestination
from connectors.mailchimp.ecommerce_bodies import customer_id, store_id
from crmsync.contract import ConnectorContext, Outcome
from crmsync.errors import ConfigError, TransientError
from crmsync.events import Event, EventDestination, EventKind, EventLine, EventResult
from tests.builders import an_event
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake, subscriber_hash
from tests.fakes.mailchimp_ecommerce import FakeStore

__all__ = ["mailchimp_fake"]

CONTEXT = ConnectorContext("mailchimp_events", Path("."))
SOURCE = "shop_eu"
STORE = store_id("crmsync-", SOURCE)
ISTANBUL = ZoneInfo("Europe/Istanbul")
PLACED = datetime(2026, 3, 1, 23, 30, tzinfo=ISTANBUL)  # 20:30 UTC: the true instant
SHIRT = EventLine("p-1", "Linen shirt", 2, Decimal("30.00"), sku="p-1-M", url="https://s/p-1")
MUG = EventLine("p-2", "Mug", 1, Decimal("12.50"), categories=("kitchen",))
ORDER_PUT = ("PUT", "/ecommerce/stores/{store_id}/orders/{order_id}")
VARIANT_PUT = ("PUT", "/ecommerce/stores/{store_id}/products/{product_id}/variants/{variant_id}")
PRODUCT_PUT = ("PUT", "/ecommerce/stores/{store_id}/products/{product_id}")


event = partial(an_event, source=SOURCE, at=PLACED, currency="eur", lines=(SHIRT, MUG))


def make(fake: FakeMailchimp, **overrides: Any) -> MailchimpDestination:
    config = MailchimpConfig.model_validate(fake.destination_config(**overrides))
    return MailchimpDestination(config, CONTEXT)


@pytest.fixture
def dest(mailchimp_fake: FakeMailchimp) -> Iterator[MailchimpDestination]:
    destination = make(mailchimp_fake)
    yield destination
    destination.close()


def push(dest: MailchimpDestination, *events: Event) -> dict[str, EventResult]:
    results = dest.push_events(events)
    assert sorted(r.key for r in results) == sorted(e.key for e in events)
    return {r.key: r for r in results}


def outcomes(results: dict[str, EventResult]) -> dict[str, Outcome]:
    return {key: result.outcome for key, result in results.items()}


def test_it_takes_events_and_leaves_ordered_product_to_the_orders_lines(
    dest: MailchimpDestination,
) -> None:
    assert isinstance(dest, EventDestination)
    names = dest.event_names()
    assert EventKind.ORDERED_PRODUCT not in names
    assert set(names) == set(EventKind) - {EventKind.ORDERED_PRODUCT}
    assert dest.max_event_batch == 500


def test_a_placed_order_arrives_with_its_lines_and_a_customer_who_is_not_subscribed(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    placed = event(EventKind.PLACED_ORDER, properties={"shipping_total": "5.00", "discount": "2"})
    assert outcomes(push(dest, placed)) == {placed.key: Outcome.OK}

    store = mailchimp_fake.stores[STORE]
    assert store.view() == {
        "id": STORE,
        "list_id": mailchimp_fake.list_id,
        "name": SOURCE,
        "currency_code": "EUR",
        "platform": "crmsync",
        "is_syncing": False,
    }
    order = store.orders["1001"]
    assert order["processed_at_foreign"] == "2026-03-01T20:30:00+00:00"
    assert order["order_total"] == 72.5
    assert order["shipping_total"] == 5.0
    assert order["discount_total"] == 2.0
    assert order["currency_code"] == "EUR"
    assert order["financial_status"] == "paid"
    assert [
        (line["product_id"], line["product_variant_id"], line["quantity"], line["price"])
        for line in order["lines"]
    ] == [("p-1", "p-1-M", 2, 60.0), ("p-2", "p-2", 1, 12.5)]
    customer = store.customers[customer_id("ayse@example.com")]
    assert customer["opt_in_status"] is False
    assert customer["email_address"] == "ayse@example.com"
    # a customer new to the audience is a transactional member, never a subscriber
    assert mailchimp_fake.member("ayse@example.com")["status"] == "transactional"
    shirt = store.products["p-1"]
    assert shirt["title"] == "Linen shirt" and shirt["url"] == "https://s/p-1"
    assert shirt["variants"]["p-1-M"] == {
        "id": "p-1-M",
        "title": "Linen shirt",
        "price": 30.0,
        "sku": "p-1-M",
        "url": "https://s/p-1",
    }
    assert store.products["p-2"]["type"] == "kitchen"
    assert mailchimp_fake.triggers == [(STORE, "order", "1001")]


def test_an_existing_members_status_is_left_alone(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.add_member("ayse@example.com", "unsubscribed")
    push(dest, event(EventKind.PLACED_ORDER), event(EventKind.STARTED_CHECKOUT, "c-9"))
    assert mailchimp_fake.member("ayse@example.com")["status"] == "unsubscribed"


def test_a_resend_of_the_same_events_changes_nothing(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    batch = (
        event(EventKind.PLACED_ORDER),
        event(EventKind.STARTED_CHECKOUT, "c-7", checkout_url="https://s/c/7"),
    )
    push(dest, *batch)
    store = mailchimp_fake.stores[STORE]

    def snapshot() -> Any:
        strip = ("created_at", "updated_at")
        return (
            {k: {f: v for f, v in o.items() if f not in strip} for k, o in store.orders.items()},
            {k: {f: v for f, v in c.items() if f not in strip} for k, c in store.carts.items()},
            store.products,
            store.customers,
            mailchimp_fake.statuses(),
        )

    before = repr(snapshot())
    triggers = list(mailchimp_fake.triggers)
    mailchimp_fake.reset_counters()
    again = push(dest, *batch)
    assert set(outcomes(again).values()) == {Outcome.OK}
    assert repr(snapshot()) == before
    # the order is the same upsert; the cart, there already with the same lines, is
    # patched (not re-created: its abandoned-cart automation is not started again)
    assert mailchimp_fake.calls == {
        ORDER_PUT: 1,
        ("POST", "/ecommerce/stores/{store_id}/carts"): 1,
        ("GET", "/ecommerce/stores/{store_id}/carts/{cart_id}"): 1,
        ("PATCH", "/ecommerce/stores/{store_id}/carts/{cart_id}"): 1,
    }
    assert mailchimp_fake.triggers == triggers


def test_a_cart_whose_lines_changed_is_replaced(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    started = event(EventKind.STARTED_CHECKOUT, "c-8", checkout_url="https://s/c/8")
    push(dest, started)
    grown = replace(started, lines=(SHIRT, MUG, replace(MUG, quantity=3)), value=None)
    assert outcomes(push(dest, grown)) == {grown.key: Outcome.OK}
    cart = mailchimp_fake.stores[STORE].carts["c-8"]
    assert [line["quantity"] for line in cart["lines"]] == [2, 1, 3]
    assert cart["order_total"] == 110.0


@pytest.mark.parametrize(
    ("properties", "status"),
    [({"order_total": "72.50"}, "refunded"), ({"order_total": "100"}, "partially_refunded")],
)
def test_a_refund_after_the_order_updates_its_financial_status(
    mailchimp_fake: FakeMailchimp,
    dest: MailchimpDestination,
    properties: dict[str, str],
    status: str,
) -> None:
    push(dest, event(EventKind.PLACED_ORDER))
    later = PLACED + timedelta(days=3)
    refund = event(EventKind.REFUNDED_ORDER, value="72.50", at=later, properties=properties)
    assert outcomes(push(dest, refund)) == {refund.key: Outcome.OK}
    order = mailchimp_fake.stores[STORE].orders["1001"]
    assert order["financial_status"] == status
    assert order["order_total"] == 72.5  # Mailchimp keeps no refunded amount on an order
    assert (STORE, f"financial_status:{status}", "1001") in mailchimp_fake.triggers


def test_fulfilment_and_cancellation_update_the_orders_statuses(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    shipped_at = PLACED + timedelta(days=1)
    results = push(
        dest,
        event(EventKind.FULFILLED_ORDER, at=shipped_at),
        event(EventKind.PLACED_ORDER),  # in one batch: the placed order goes first
        event(EventKind.CANCELLED_ORDER, "1002", at=shipped_at),
        event(EventKind.PLACED_ORDER, "1002"),
    )
    assert set(outcomes(results).values()) == {Outcome.OK}
    orders = mailchimp_fake.stores[STORE].orders
    assert orders["1001"]["fulfillment_status"] == "shipped"
    assert orders["1002"]["financial_status"] == "cancelled"
    assert orders["1002"]["cancelled_at_foreign"] == "2026-03-02T20:30:00+00:00"


def test_a_status_of_an_order_mailchimp_lacks_fails_to_be_retried(
    dest: MailchimpDestination,
) -> None:
    fulfilled = event(EventKind.FULFILLED_ORDER, "404")
    result = push(dest, fulfilled)[fulfilled.key]
    assert result.outcome is Outcome.FAILED
    assert "not in Mailchimp yet" in result.message


def test_a_started_checkout_creates_the_cart_and_a_closed_one_deletes_it(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    started = event(EventKind.STARTED_CHECKOUT, "c-1", checkout_url="https://s/checkout/c-1")
    assert outcomes(push(dest, started)) == {started.key: Outcome.OK}
    cart = mailchimp_fake.stores[STORE].carts["c-1"]
    assert cart["checkout_url"] == "https://s/checkout/c-1"
    assert cart["order_total"] == 72.5
    assert [(line["product_variant_id"], line["quantity"]) for line in cart["lines"]] == [
        ("p-1-M", 2),
        ("p-2", 1),
    ]
    assert cart["customer"]["opt_in_status"] is False
    assert (STORE, "cart", "c-1") in mailchimp_fake.triggers

    closed = event(EventKind.CHECKOUT_CLOSED, "c-1", lines=())
    assert outcomes(push(dest, closed)) == {closed.key: Outcome.OK}
    assert "c-1" not in mailchimp_fake.stores[STORE].carts
    # closing it again (a resend): already gone, which is what was wanted
    assert push(dest, closed)[closed.key].message == "already gone"


def test_a_person_without_an_email_address_gets_no_event(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    placed = event(EventKind.PLACED_ORDER, email=None, phone="+905551112233")
    closed = event(EventKind.CHECKOUT_CLOSED, "c-2", email=None)
    results = push(dest, placed, closed)
    assert results[placed.key].outcome is Outcome.REJECTED
    assert "e-mail" in results[placed.key].message
    assert results[closed.key].outcome is Outcome.OK  # no cart was ever sent for them
    assert mailchimp_fake.writes() == 0


def test_an_ordered_product_is_carried_by_its_order(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    line = replace(event(EventKind.ORDERED_PRODUCT), key="ordered_product:shop_eu:1001:1")
    assert outcomes(push(dest, line)) == {line.key: Outcome.OK}
    assert mailchimp_fake.writes() == 0


def test_an_order_refused_fails_its_event_only(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    first, second = event(EventKind.PLACED_ORDER, "A"), event(EventKind.PLACED_ORDER, "B")
    mailchimp_fake.inject(400, only=ORDER_PUT)
    results = push(dest, first, second)
    assert sorted(outcomes(results).values()) == [Outcome.OK, Outcome.REJECTED]
    ok = next(key for key, result in results.items() if result.outcome is Outcome.OK)
    assert set(mailchimp_fake.stores[STORE].orders) == {ok.rsplit(":", 1)[1]}


def test_a_product_refused_fails_the_events_that_need_it(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.inject(400, only=VARIANT_PUT)
    shirt_only = event(EventKind.PLACED_ORDER, "S", lines=(SHIRT,))
    results = push(dest, shirt_only)
    assert results[shirt_only.key].outcome is Outcome.FAILED
    assert "product p-1" in results[shirt_only.key].message
    assert mailchimp_fake.stores[STORE].orders == {}
    assert outcomes(push(dest, shirt_only)) == {shirt_only.key: Outcome.OK}  # a later run


def test_rate_limits_are_waited_out(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.inject(429, 429, retry_after="0")
    placed = event(EventKind.PLACED_ORDER)
    assert outcomes(push(dest, placed)) == {placed.key: Outcome.OK}
    assert "1001" in mailchimp_fake.stores[STORE].orders


def test_an_outage_stops_the_run_instead_of_failing_each_event(
    mailchimp_fake: FakeMailchimp,
) -> None:
    dest = make(mailchimp_fake, http={"retry": {"attempts": 2, "backoff_initial": 0.01}})
    try:
        push(dest, event(EventKind.PLACED_ORDER))  # the store is known from here on
        mailchimp_fake.storm(1.0, statuses=(503,))
        with pytest.raises(TransientError, match="Mailchimp is unreachable"):
            dest.push_events([event(EventKind.FULFILLED_ORDER)])
    finally:
        mailchimp_fake.storm(0.0)
        dest.close()


def test_historical_orders_land_while_the_stores_automations_are_paused(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    old = event(EventKind.PLACED_ORDER, "900", historical=True)
    new = event(EventKind.PLACED_ORDER, "1001")
    assert set(outcomes(push(dest, old, new)).values()) == {Outcome.OK}
    assert mailchimp_fake.paused == [(STORE, "order", "900")]
    assert mailchimp_fake.triggers == [(STORE, "order", "1001")]
    assert mailchimp_fake.syncing_changes == [(STORE, True), (STORE, False)]
    assert mailchimp_fake.stores[STORE].is_syncing is False


def test_a_store_left_syncing_by_a_crash_is_found_and_resumed(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    crashed = make(mailchimp_fake)
    try:
        mailchimp_fake.inject(500, only=("PATCH", "/ecommerce/stores/{store_id}"))
        mailchimp_fake.inject(500, only=("PATCH", "/ecommerce/stores/{store_id}"))
        mailchimp_fake.inject(500, only=("PATCH", "/ecommerce/stores/{store_id}"))
        mailchimp_fake.inject(500, only=("PATCH", "/ecommerce/stores/{store_id}"))
        push(crashed, event(EventKind.PLACED_ORDER, "900", historical=True))
    finally:
        crashed.close()
    mailchimp_fake.faults.clear()
    mailchimp_fake.stores[STORE].is_syncing = True  # as an interrupted backfill leaves it
    mailchimp_fake.reset_counters()

    placed = event(EventKind.PLACED_ORDER)
    assert outcomes(push(dest, placed)) == {placed.key: Outcome.OK}
    assert mailchimp_fake.stores[STORE].is_syncing is False
    assert (STORE, "order", "1001") in mailchimp_fake.triggers
    assert mailchimp_fake.calls[("POST", "/ecommerce/stores")] == 0  # found, not created


def test_calls_for_a_batch_of_orders_are_one_per_order_beside_the_catalogue(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    """The first push: the store (looked up, created), each new product (its variant
    PUT answers 404, the product PUT brings it), then one PUT per order. Later pushes:
    one PUT per order. A first run of 10,000 orders over P products is 10,000 + 2P + 2
    calls, the floor (one call per order) plus the catalogue."""
    orders = [
        event(EventKind.PLACED_ORDER, f"o-{n}", email=f"buyer{n}@example.com") for n in range(40)
    ]
    results = push(dest, *orders)
    assert set(outcomes(results).values()) == {Outcome.OK}
    assert sum(mailchimp_fake.calls.values()) == 2 + 2 * 2 + 40
    assert mailchimp_fake.calls[ORDER_PUT] == 40
    assert mailchimp_fake.calls[PRODUCT_PUT] == 2
    mailchimp_fake.reset_counters()
    more = [event(EventKind.PLACED_ORDER, f"q-{n}") for n in range(25)]
    push(dest, *more)
    assert sum(mailchimp_fake.calls.values()) == 25
    assert mailchimp_fake.max_in_flight <= 10
    members = mailchimp_fake.audience.members
    assert members[subscriber_hash("buyer7@example.com")]["status"] == "transactional"


def test_store_ids_are_readable_and_distinct_per_source() -> None:
    assert store_id("crmsync-", "shop_eu") == "crmsync-shop_eu"
    assert store_id("crmsync-", "EU shop") != store_id("crmsync-", "eu-shop")
    assert store_id("crmsync-", "EU shop").startswith("crmsync-eu-shop-")
    assert len(store_id("crmsync-", "x" * 200)) <= 50


def test_a_store_of_another_audience_is_a_configuration_error(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.add_list("other", "Another audience")
    mailchimp_fake.stores[STORE] = FakeStore(STORE, "other", "theirs", "EUR")
    with pytest.raises(ConfigError, match="another audience"):
        dest.push_events([event(EventKind.PLACED_ORDER)])


@pytest.mark.parametrize(
    ("properties", "kind", "status"),
    [
        ({"status": "cancelled"}, EventKind.CANCELLED_ORDER, "cancelled"),
        ({"status": "fulfilled", "refunded": "72.50", "order_total": "72.50"},
         EventKind.REFUNDED_ORDER, "refunded"),
        ({"status": "fulfilled", "refunded": "10.00", "order_total": "72.50"},
         EventKind.REFUNDED_ORDER, "partially_refunded"),
    ],
)  # fmt: skip
def test_a_placed_order_sent_again_keeps_its_current_status_so_nothing_changes_twice(
    mailchimp_fake: FakeMailchimp,
    dest: MailchimpDestination,
    properties: dict[str, str],
    kind: EventKind,
    status: str,
) -> None:
    """The batch in flight at a crash is sent again: its placed order, derived from the
    order as it is now, must not turn a cancelled or refunded order back to paid (its
    status event would then change it again, and Mailchimp notify the customer twice)."""
    push(dest, event(EventKind.PLACED_ORDER))
    later = PLACED + timedelta(days=3)
    value = properties.get("refunded", "72.50")
    change = event(kind, value=value, at=later, properties=properties)
    push(dest, change)
    noted = [t for t in mailchimp_fake.triggers if t[2] == "1001"]
    resent = event(EventKind.PLACED_ORDER, properties=properties)
    assert outcomes(push(dest, resent, change)) == {resent.key: Outcome.OK, change.key: Outcome.OK}
    order = mailchimp_fake.stores[STORE].orders["1001"]
    assert order["financial_status"] == status
    assert [t for t in mailchimp_fake.triggers if t[2] == "1001"] == noted  # nothing new
    if properties["status"] == "fulfilled":
        assert order["fulfillment_status"] == "shipped"
