"""Events end to end into the fake HubSpot: a generated store's orders and abandoned
carts become orders and carts associated with their contacts, once each, through the CLI
and the event ledger; a second run writes nothing; a refund updates its order once."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e import AS_OF, Site, edit_order
from tests.events_site import edit_cart, events_site, jsonl
from tests.fakes.hubspot import FakeHubSpot, hubspot_fake
from tests.fakes.hubspot_commerce import live

__all__ = ["hubspot_fake"]

ABANDON = timedelta(hours=4)  # profile.abandoned_cart_hours' default
LIVE = timedelta(hours=24)  # events_live_hours' default: older events go as historical
FAST = 2_000
WRITES = ("create_orders", "create_carts", "create_line_items", "update_orders", "archive_carts")


def _point_at(site: Site, fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", fake.token)
    site.send_to(
        "hs",
        'kind = "hubspot"\naccess_token = "${CRMSYNC_TEST_HUBSPOT_TOKEN}"\n'
        f'base_url = "{fake.base_url}"\n'
        f"[destinations.hs.rate_limits]\nper_ten_seconds = {FAST}\n"
        "[destinations.hs.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def _changed(cart: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(cart.get("updated_at") or cart["created_at"]))


def _writes(fake: FakeHubSpot) -> int:
    return sum(n for (_, name), n in fake.calls.items() if name in WRITES)


def test_orders_and_abandoned_carts_reach_hubspot_once_each(
    tmp_path: Path, hubspot_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot_fake.per_ten_seconds = FAST
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=150)
    _point_at(site, hubspot_fake, monkeypatch)
    as_of = datetime.fromisoformat(AS_OF)
    carts = {str(c["id"]): c for c in jsonl(site.data / "carts.jsonl")}
    open_carts = sorted(
        cid
        for cid, c in carts.items()
        if not c.get("completed_at") and c.get("email") and _changed(c) + ABANDON <= as_of
    )
    recent = [cid for cid in open_carts if _changed(carts[cid]) >= as_of - LIVE]
    converted = recent[0]  # converted into an order in time: no cart in HubSpot
    edit_cart(site.data / "carts.jsonl", converted, completed_at="2026-10-31T10:00:00+03:00")

    code, report = site.run_report()
    assert code in (0, 5), report
    counts = report["events"]["hs"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 0, report

    orders = {str(o["id"]): o for o in jsonl(site.data / "orders.jsonl")}
    made = [o.properties for o in live(hubspot_fake, "orders")]
    ids = [p["hs_external_order_id"] for p in made]
    assert Counter(ids).most_common(1)[0][1] == 1, "an order was made twice"
    contacts = {c.email for c in hubspot_fake.contacts().values()}
    expected = {oid for oid, o in orders.items() if str(o.get("email") or "").lower() in contacts}
    assert expected and set(ids) == expected
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

    hubspot_fake.reset_counters()
    code, again = site.run_report()
    assert code in (0, 5), again
    assert _writes(hubspot_fake) == 0  # a second run sends nothing

    refundable = next(
        o
        for oid, o in orders.items()
        if oid in expected and o["status"] == "fulfilled" and o["total_refunded"] == "0.00"
    )
    edit_order(
        site.data / "orders.jsonl",
        refundable["id"],
        total_refunded="100.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    hubspot_fake.reset_counters()
    site.run_report()
    site.run_report()
    assert hubspot_fake.calls[("POST", "update_orders")] == 1
    assert by_id[str(refundable["id"])].properties["hs_payment_status"] == "refunded"
    assert not hubspot_fake.violations
