"""Events end to end into the fake HubSpot: a generated store's orders and abandoned
carts become orders and carts associated with their contacts, once each, through the CLI
and the event ledger; a second run writes nothing; a refund updates its order once."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from tests.events_site import events_site
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import live
from tests.hubspot_modes import (
    abandoned_carts,
    first_run,
    point_at,
    refund_one,
    writes_again,
)

__all__ = ["hubspot_fake"]

WRITES = ("create_orders", "create_carts", "create_line_items", "update_orders", "archive_carts")


def test_orders_and_abandoned_carts_reach_hubspot_once_each(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=150)
    point_at(site, hubspot_fake, monkeypatch)
    carts, recent, converted = abandoned_carts(site)  # converted: no cart in HubSpot

    orders, expected = first_run(site, hubspot_fake)
    made = [o.properties for o in live(hubspot_fake, "orders")]
    ids = [p["hs_external_order_id"] for p in made]
    assert Counter(ids).most_common(1)[0][1] == 1, "an order was made twice"
    assert set(ids) == expected
    for properties in made:
        order = orders[properties["hs_external_order_id"]]
        assert Decimal(properties["hs_total_price"]) == Decimal(str(order["total_price"]))
        assert properties["hs_currency_code"] == order["currency"]
    by_id = {o.properties["hs_external_order_id"]: o for o in live(hubspot_fake, "orders")}
    some = sorted(expected)[0]
    contact = hubspot_fake.contact(str(orders[some]["email"]))
    assert contact is not None and ("contacts", contact.id, 507) in by_id[some].associations
    lines = [a for a in by_id[some].associations if a[0] == "line_items"]
    assert len(lines) == len(orders[some]["line_items"])

    made_carts = {c.properties["hs_external_cart_id"]: c for c in live(hubspot_fake, "carts")}
    assert set(made_carts) == set(recent) - {converted}  # past ones are not made carts
    assert all(
        c.properties["hs_cart_url"] == carts[cid]["abandoned_checkout_url"]
        for cid, c in made_carts.items()
    )

    assert writes_again(site, hubspot_fake, WRITES) == 0  # a second run sends nothing

    hubspot_fake.reset_counters()
    refundable = refund_one(site, orders, expected)
    assert hubspot_fake.calls[("POST", "update_orders")] == 1
    assert by_id[str(refundable["id"])].properties["hs_payment_status"] == "refunded"
    assert not hubspot_fake.violations
