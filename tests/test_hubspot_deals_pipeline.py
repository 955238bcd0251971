"""Events end to end into the fake HubSpot as deals (``objects = "deals"``): a generated
store's orders become won (or lost) deals and its abandoned carts open deals in the
checkout stage, associated with their contacts, once each, through the CLI and the event
ledger; a converted cart makes none; a second run writes nothing; a refund updates its
deal once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.events_site import events_site
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import CommerceObject
from tests.fakes.hubspot_deals import deals
from tests.hubspot_modes import (
    abandoned_carts,
    first_run,
    point_at,
    refund_one,
    with_cart_stages,
    writes,
    writes_again,
)

__all__ = ["hubspot_fake"]

WRITES = ("create_deals", "create_line_items", "update_deals", "archive_deals")
DEALS = 'objects = "deals"\ncheckout_pipeline = "carts"\ncheckout_stage = "abandoned"\n'


def _utc(stamp: object) -> str:
    moment = datetime.fromisoformat(str(stamp)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_orders_and_abandoned_carts_reach_hubspot_as_deals_once_each(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=150)
    point_at(site, with_cart_stages(hubspot_fake), monkeypatch, DEALS)
    carts, recent, converted = abandoned_carts(site)  # converted: no deal in HubSpot

    orders, expected = first_run(site, hubspot_fake)
    by_order: dict[str, CommerceObject] = {}
    by_cart: dict[str, CommerceObject] = {}
    for deal in deals(hubspot_fake):
        if "crmsync_order_id" in deal.properties:
            by_order.setdefault(deal.properties["crmsync_order_id"], deal)
        else:
            by_cart.setdefault(deal.properties["crmsync_cart_id"], deal)
    made = Counter(d.properties.get("crmsync_order_id", "") for d in deals(hubspot_fake))
    made.pop("")  # the checkouts' deals
    assert made.most_common(1)[0][1] == 1, "an order was made a deal twice"
    assert set(by_order) == expected
    stages: Counter[str] = Counter()
    for oid, deal in by_order.items():
        order, props = orders[oid], deal.properties
        assert Decimal(props["amount"]) == Decimal(str(order["total_price"]))
        assert props["deal_currency_code"] == order["currency"]
        assert props["closedate"] == _utc(order["created_at"])
        assert props["pipeline"] == "default"
        refunded = Decimal(str(order["total_refunded"]))
        if order["status"] == "cancelled":
            assert props["dealstage"] == "closedlost", (oid, props)
        elif refunded == 0 and order["status"] in ("paid", "fulfilled", "shipped"):
            assert props["dealstage"] == "closedwon", (oid, props)
        stages[props["dealstage"]] += 1
        lines = [a for a in deal.associations if a[0] == "line_items"]
        assert len(lines) == len(order["line_items"]) and {a[2] for a in lines} == {19}
    assert stages["closedwon"] > 0 and stages["closedlost"] > 0
    some = sorted(expected)[0]
    contact = hubspot_fake.contact(str(orders[some]["email"]))
    assert contact is not None and ("contacts", contact.id, 3) in by_order[some].associations

    assert set(by_cart) == set(recent) - {converted}  # past ones are not made deals
    for cid, deal in by_cart.items():
        assert deal.properties["crmsync_checkout_url"] == carts[cid]["abandoned_checkout_url"]
        assert (deal.properties["pipeline"], deal.properties["dealstage"]) == ("carts", "abandoned")
        assert deal.properties["dealname"] == f"Checkout {cid}"

    assert writes_again(site, hubspot_fake, WRITES) == 0  # a second run sends nothing

    hubspot_fake.reset_counters()
    refundable = refund_one(site, orders, expected)
    assert hubspot_fake.calls[("POST", "update_deals")] == 1
    assert writes(hubspot_fake, WRITES) == 1
    refunded_deal = by_order[str(refundable["id"])].properties
    assert refunded_deal["crmsync_refunded"] == "100"
    assert refunded_deal["dealstage"] == "closedwon"  # a part refund: still won
    assert not hubspot_fake.violations
