"""Events end to end into the fake Mailchimp: a generated store's orders and abandoned carts
become the store's e-commerce objects once each, through the CLI and the event ledger."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connectors.mailchimp.ecommerce_bodies import store_id
from tests.e2e import AS_OF, Site, consented
from tests.events_site import edit_cart, events_site, jsonl
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake

__all__ = ["mailchimp_fake"]

ABANDON = timedelta(hours=4)  # profile.abandoned_cart_hours' default
STORE = store_id("crmsync-", "shop")


def _point_at(
    site: Site, fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch, attempts: int = 6
) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_MAILCHIMP_KEY", fake.api_key)
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{CRMSYNC_TEST_MAILCHIMP_KEY}}"\n'
        f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\n'
        "[destinations.mc.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n"
        f"attempts = {attempts}\n",
    )
    fake.expect_consented(consented(site.data))


def _abandoned(carts: list[dict[str, object]]) -> list[str]:
    as_of = datetime.fromisoformat(AS_OF)
    return sorted(
        str(c["id"])
        for c in carts
        if not c.get("completed_at")
        and c.get("email")
        and datetime.fromisoformat(str(c.get("updated_at") or c["created_at"])) + ABANDON <= as_of
    )


def test_orders_and_abandoned_carts_reach_the_mailchimp_store_once(
    tmp_path: Path, mailchimp_fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=150)
    _point_at(site, mailchimp_fake, monkeypatch)
    open_carts = _abandoned(jsonl(site.data / "carts.jsonl"))
    converted = open_carts[0]  # converted into an order: no abandoned-cart email for it
    edit_cart(site.data / "carts.jsonl", converted, completed_at="2026-10-31T10:00:00+03:00")

    code, report = site.run_report()
    assert code in (0, 5), report
    counts = report["events"]["mc"]
    assert counts.get("failed", 0) == 0, report
    assert counts["ok"] > 0, report
    store = mailchimp_fake.stores[STORE]
    orders = [o for o in jsonl(site.data / "orders.jsonl") if o.get("email")]
    assert set(store.orders) == {str(o["id"]) for o in orders}
    order = orders[0]
    placed = store.orders[str(order["id"])]
    assert placed["order_total"] == float(order["total_price"])
    assert placed["customer"]["opt_in_status"] is False
    assert [line["quantity"] for line in placed["lines"]] == [
        item["quantity"] for item in order["line_items"]
    ]
    cancelled = {str(o["id"]) for o in orders if o["status"] == "cancelled"}
    assert {k for k, o in store.orders.items() if o.get("financial_status") == "cancelled"} == (
        cancelled
    )
    refunded = {str(o["id"]) for o in orders if float(o.get("total_refunded") or 0) > 0}
    assert refunded and all(
        store.orders[oid]["financial_status"] in ("refunded", "partially_refunded")
        for oid in refunded
    )
    assert cancelled and len(open_carts) > 1  # the generated store has both to show
    assert set(store.carts) == set(open_carts) - {converted}
    assert all(cart.get("checkout_url") for cart in store.carts.values())
    # the engine flags past orders as historical: they landed with automations paused
    assert {t[2] for t in mailchimp_fake.paused if t[1] == "order"} and not store.is_syncing

    mailchimp_fake.reset_counters()
    code, again = site.run_report()
    assert code in (0, 5), again
    assert mailchimp_fake.writes() == 0  # a second run sends nothing


def test_answers_lost_mid_push_and_a_rerun_leave_each_order_and_cart_once(
    tmp_path: Path, mailchimp_fake: FakeMailchimp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orders and carts applied whose answers were lost (as a crash after the call loses
    them) are sent again by the next run: the same upserts, so each order starts its
    automation once, and nothing is left unsent."""
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=80)
    _point_at(site, mailchimp_fake, monkeypatch, attempts=2)
    order_put = ("PUT", "/ecommerce/stores/{store_id}/orders/{order_id}")
    cart_post = ("POST", "/ecommerce/stores/{store_id}/carts")
    for _ in range(12):  # more than the seam's retries: some events fail this run
        mailchimp_fake.inject(500, after=True, only=order_put)
    for _ in range(8):
        mailchimp_fake.inject(500, after=True, only=cart_post)

    _, first = site.run_report()
    assert first["events"]["mc"].get("failed", 0) > 0, first
    _, second = site.run_report()
    assert second["events"]["mc"].get("failed", 0) == 0, second

    store = mailchimp_fake.stores[STORE]
    orders = [o for o in jsonl(site.data / "orders.jsonl") if o.get("email")]
    assert set(store.orders) == {str(o["id"]) for o in orders}
    # created once each, live (starting automations) or historical (paused)
    arrivals = mailchimp_fake.triggers + mailchimp_fake.paused
    created = [t[2] for t in arrivals if t[1] == "order"]
    assert sorted(created) == sorted(store.orders)
    carts = [t[2] for t in arrivals if t[1] == "cart"]
    assert sorted(carts) == sorted(store.carts) and len(carts) == len(set(carts))
    mailchimp_fake.reset_counters()
    site.run_report()
    assert mailchimp_fake.writes() == 0
