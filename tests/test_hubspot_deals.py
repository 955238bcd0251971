"""HubSpot events as deals with line items against the fake: the order's deal in its
pipeline and stage, associated with the contact; statuses and stages, checkouts as open
deals, refusals, the deal properties crmsync makes, the check and the config (what
commerce objects do alike is in test_hubspot_objects, with facts in test_hubspot_facts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.http import BudgetRegistry
from connectors.hubspot import HubSpotConfig, HubSpotDestination
from crmsync.contract import Check, Outcome
from crmsync.errors import ConfigError
from crmsync.events import Event, EventKind
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import CommerceObject, objects
from tests.fakes.hubspot_deals import (
    add_deal_property,
    all_deals,
    currencies,
    deal_properties,
    deals,
)
from tests.hubspot_modes import CHECKOUTS, CONTEXT, SOURCE, event, push, with_cart_stages
from tests.hubspot_modes import make_deals as make

__all__ = ["hubspot_fake"]

DEAL_UPDATE = ("POST", "update_deals")
OWN = {
    "crmsync_order_id",
    "crmsync_cart_id",
    "crmsync_store",
    "crmsync_checkout_url",
    "crmsync_order_status",
    "crmsync_refunded",
}


def status(kind: EventKind, now: str, record: str = "1001", **extra: Any) -> Event:
    """An order's status event as the engine derives it: the order's statuses now."""
    props = {"status": now, "refunded": "0.00", **extra.pop("props", {})}
    return event(kind, record, lines=(), properties=props, **extra)


@pytest.fixture
def fake(hubspot_fake: FakeHubSpot) -> FakeHubSpot:
    hubspot_fake.add_contact("ayse@example.com")
    return with_cart_stages(hubspot_fake)


@pytest.fixture
def dest(fake: FakeHubSpot) -> Iterator[HubSpotDestination]:
    destination = make(fake, **CHECKOUTS)
    yield destination
    destination.close()


def one(fake: FakeHubSpot) -> CommerceObject:
    found = deals(fake)
    assert len(found) == 1, found
    return found[0]


def lines_of(fake: FakeHubSpot, deal: CommerceObject) -> list[CommerceObject]:
    made = objects(fake, "line_items")
    return [made[i] for kind, i, _ in sorted(deal.associations) if kind == "line_items"]


def test_deals_take_orders_and_take_checkouts_only_with_a_stage(
    fake: FakeHubSpot, dest: HubSpotDestination
) -> None:
    assert dest.event_names()[EventKind.PLACED_ORDER] == "deal"
    assert EventKind.STARTED_CHECKOUT in dest.event_names()
    assert EventKind.ORDERED_PRODUCT not in dest.event_names()
    plain = make(fake)
    try:
        names = plain.event_names()
        assert EventKind.STARTED_CHECKOUT not in names
        assert EventKind.CHECKOUT_CLOSED not in names
        assert EventKind.REFUNDED_ORDER in names
        found = push(plain, event(EventKind.STARTED_CHECKOUT, "c-1"))
        assert found["started_checkout:shop_eu:c-1"].outcome is Outcome.REJECTED
    finally:
        plain.close()
    assert not objects(fake, "deals")


def test_a_placed_order_is_a_won_deal_with_line_items_associated_with_the_contact(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    results = push(dest, event(EventKind.PLACED_ORDER, properties={"status": "paid"}))
    deal = one(fake)
    assert results["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert results["placed_order:shop_eu:1001"].remote_id == deal.id
    assert deal.properties == {
        "dealname": "Order 1001",
        "pipeline": "default",
        "dealstage": "closedwon",
        "closedate": "2026-03-01T20:30:00.000Z",
        "amount": "72.5",
        "deal_currency_code": "EUR",
        "crmsync_order_id": "1001",
        "crmsync_store": SOURCE,
        "crmsync_order_status": "paid",
    }
    contact = fake.contact("ayse@example.com")
    assert contact is not None and ("contacts", contact.id, 3) in deal.associations
    assert {t for k, _, t in deal.associations if k == "line_items"} == {19}
    lines = lines_of(fake, deal)
    assert sorted((li.properties["name"], li.properties["quantity"]) for li in lines) == [
        ("Linen shirt", "2"),
        ("Mug", "1"),
    ]
    made = deal_properties(fake)
    assert set(made) >= OWN
    assert {made[name].group for name in OWN} == {"crmsync"}
    assert made["crmsync_refunded"].type == "number"


def test_crmsync_makes_its_deal_properties_once(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    push(dest, event(EventKind.PLACED_ORDER, "1"))
    assert fake.calls[("POST", "create_deal_property")] == len(OWN)
    assert fake.calls[("POST", "create_deal_group")] == 1
    fake.reset_counters()
    push(dest, event(EventKind.PLACED_ORDER, "2"))
    assert fake.calls[("GET", "list_deal_properties")] == 0  # once per destination (run)
    again = make(fake, **CHECKOUTS)
    try:
        push(again, event(EventKind.PLACED_ORDER, "3"))
    finally:
        again.close()
    assert fake.calls[("GET", "list_deal_properties")] == 1
    assert fake.calls[("POST", "create_deal_property")] == 0
    assert len(deals(fake)) == 3


def test_fulfilment_and_a_part_refund_keep_the_deal_won(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    push(dest, event(EventKind.PLACED_ORDER))
    results = push(
        dest,
        status(EventKind.FULFILLED_ORDER, "fulfilled"),
        status(
            EventKind.REFUNDED_ORDER,
            "fulfilled",
            value="12.50",
            props={"refunded": "12.50", "order_total": "72.50"},
        ),
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    deal = one(fake)
    assert deal.properties["crmsync_order_status"] == "fulfilled"
    assert deal.properties["crmsync_refunded"] == "12.5"
    assert deal.properties["dealstage"] == "closedwon"
    assert fake.calls[DEAL_UPDATE] == 1  # both changes of the one deal in one input


def test_a_cancellation_or_a_whole_refund_moves_the_deal_to_the_lost_stage(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    push(dest, event(EventKind.PLACED_ORDER, "1"), event(EventKind.PLACED_ORDER, "2"))
    results = push(
        dest,
        status(EventKind.CANCELLED_ORDER, "cancelled", "1"),
        status(
            EventKind.REFUNDED_ORDER,
            "paid",
            "2",
            value="72.50",
            props={"refunded": "72.50", "order_total": "72.50"},
        ),
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    by_order = {d.properties["crmsync_order_id"]: d.properties for d in deals(fake)}
    assert by_order["1"]["dealstage"] == "closedlost"
    assert by_order["1"]["crmsync_order_status"] == "cancelled"
    assert by_order["2"]["dealstage"] == "closedlost"
    assert by_order["2"]["crmsync_refunded"] == "72.5"


def test_without_a_lost_stage_a_cancellation_changes_only_the_status(
    fake: FakeHubSpot,
) -> None:
    dest = make(fake, lost_stage="")
    try:
        push(dest, event(EventKind.PLACED_ORDER))
        push(dest, status(EventKind.CANCELLED_ORDER, "cancelled"))
    finally:
        dest.close()
    deal = one(fake)
    assert deal.properties["dealstage"] == "closedwon"
    assert deal.properties["crmsync_order_status"] == "cancelled"


def test_an_order_cancelled_before_it_was_sent_is_made_a_lost_deal(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    results = push(dest, event(EventKind.PLACED_ORDER, properties={"status": "cancelled"}))
    assert results["placed_order:shop_eu:1001"].outcome is Outcome.OK
    assert one(fake).properties["dealstage"] == "closedlost"


def test_an_older_status_sent_again_does_not_undo_a_later_one(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    push(dest, event(EventKind.PLACED_ORDER))
    push(dest, status(EventKind.CANCELLED_ORDER, "cancelled"))
    # the fulfilment's batch was in flight at a crash; derived again, it carries "cancelled"
    push(dest, status(EventKind.FULFILLED_ORDER, "cancelled"))
    deal = one(fake)
    assert deal.properties["crmsync_order_status"] == "cancelled"
    assert deal.properties["dealstage"] == "closedlost"


def test_a_started_checkout_is_an_open_deal_and_a_closed_one_is_archived(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    url = "https://shop.example/checkout/c-9"
    started = push(dest, event(EventKind.STARTED_CHECKOUT, "c-9", checkout_url=url))
    deal = one(fake)
    assert started["started_checkout:shop_eu:c-9"].remote_id == deal.id
    assert deal.properties == {
        "dealname": "Checkout c-9",
        "pipeline": "carts",
        "dealstage": "abandoned",
        "crmsync_cart_id": "c-9",
        "crmsync_store": SOURCE,
        "crmsync_checkout_url": url,
        "deal_currency_code": "EUR",
        "amount": "72.5",
    }
    contact = fake.contact("ayse@example.com")
    assert contact is not None and ("contacts", contact.id, 3) in deal.associations
    assert len(lines_of(fake, deal)) == 2
    again = push(dest, event(EventKind.STARTED_CHECKOUT, "c-9", checkout_url=url))
    assert again["started_checkout:shop_eu:c-9"].outcome is Outcome.OK
    assert len(all_deals(fake)) == 1
    closed = push(dest, event(EventKind.CHECKOUT_CLOSED, "c-9", value=None, lines=()))
    assert closed["checkout_closed:shop_eu:c-9"].outcome is Outcome.OK
    assert not deals(fake) and all_deals(fake)[deal.id].archived
    gone = push(dest, event(EventKind.CHECKOUT_CLOSED, "c-9", value=None, lines=()))
    assert gone["checkout_closed:shop_eu:c-9"].outcome is Outcome.OK


def test_a_closed_checkout_moves_to_its_stage_when_one_is_set(fake: FakeHubSpot) -> None:
    dest = make(fake, **CHECKOUTS, closed_checkout_stage="recovered")
    try:
        push(dest, event(EventKind.STARTED_CHECKOUT, "c-9"))
        push(dest, event(EventKind.PLACED_ORDER, "1001"))  # its order: not the cart's deal
        closed = push(dest, event(EventKind.CHECKOUT_CLOSED, "c-9", value=None, lines=()))
    finally:
        dest.close()
    assert closed["checkout_closed:shop_eu:c-9"].outcome is Outcome.OK
    by_name = {d.properties["dealname"]: d.properties for d in deals(fake)}
    assert by_name["Checkout c-9"]["dealstage"] == "recovered"
    assert by_name["Checkout c-9"]["pipeline"] == "carts"
    assert by_name["Order 1001"]["dealstage"] == "closedwon"


def test_a_stage_hubspot_does_not_know_rejects_the_orders_saying_so(
    fake: FakeHubSpot,
) -> None:
    dest = make(fake, won_stage="closed-won-typo")
    try:
        results = push(dest, event(EventKind.PLACED_ORDER))
    finally:
        dest.close()
    found = results["placed_order:shop_eu:1001"]
    assert found.outcome is Outcome.REJECTED
    assert "'closed-won-typo' is not a valid stage" in found.message
    assert not objects(fake, "deals")


def test_a_currency_the_account_lacks_rejects_the_order_saying_so(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    currencies(fake).discard("EUR")
    results = push(dest, event(EventKind.PLACED_ORDER))
    found = results["placed_order:shop_eu:1001"]
    assert (
        found.outcome is Outcome.REJECTED and "not one of the account's currencies" in found.message
    )


def test_a_deal_property_of_another_type_stops_the_events_naming_it(
    dest: HubSpotDestination, fake: FakeHubSpot
) -> None:
    add_deal_property(fake, "crmsync_refunded", "string", "text")
    with pytest.raises(ConfigError, match=r"crmsync_refunded.*'string'"):
        dest.push_events([event(EventKind.PLACED_ORDER)])
    assert not objects(fake, "deals") and not objects(fake, "line_items")


def test_the_check_names_the_deal_stages_properties_and_scopes(fake: FakeHubSpot) -> None:
    def checks(**events: Any) -> dict[str, Check]:
        dest = make(fake, **events)
        try:
            return {c.what: c for c in dest.check()}
        finally:
            dest.close()

    good = checks(**CHECKOUTS)
    assert good["deal pipelines"].ok
    assert good["deal properties"].ok and "crmsync_order_id" in good["deal properties"].detail
    assert "crm.objects.deals.write" in good["deal write scopes"].detail
    assert "crm.objects.line_items.write" in good["deal write scopes"].detail
    typo = checks(checkout_stage="abandonned", checkout_pipeline="carts")["deal pipelines"]
    assert not typo.ok
    assert "events.checkout_stage" in typo.detail and "abandoned, recovered" in typo.detail
    add_deal_property(fake, "crmsync_order_id", "number", "number")
    clash = checks()["deal properties"]
    assert not clash.ok and "crmsync_order_id" in clash.detail
    commerce = HubSpotConfig.model_validate({"access_token": fake.token, "base_url": fake.base_url})
    plain = HubSpotDestination(commerce, CONTEXT, budgets=BudgetRegistry(sleep=lambda s: None))
    try:
        assert not {"deal pipelines", "deal properties"} & {c.what for c in plain.check()}
    finally:
        plain.close()


def test_the_configuration_takes_deals_and_refuses_their_options_elsewhere(
    fake: FakeHubSpot,
) -> None:
    def config(**events: Any) -> HubSpotConfig:
        return HubSpotConfig.model_validate({"access_token": fake.token, "events": events})

    made = config(objects="deals", checkout_stage="abandoned", closed_checkout_stage="won")
    assert made.events.checkouts_pipeline == "default"
    with pytest.raises(ValidationError, match="pipeline: only for objects = 'deals'"):
        config(pipeline="sales")
    with pytest.raises(ValidationError, match="closed_checkout_stage: only with checkout_stage"):
        config(objects="deals", closed_checkout_stage="recovered")
    with pytest.raises(ValidationError, match="objects"):
        config(objects="quotes")
