"""Events end to end into the fake Klaviyo: a generated store's orders and abandoned carts
arrive as Klaviyo's standard metrics once each, through the CLI and the event ledger.

The fake checks every request against Klaviyo's spec and, on teardown, that nobody ended
subscribed without consent: events never subscribe anybody.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e import AS_OF, Site, consented, edit_order
from tests.events_site import edit_cart, events_site, jsonl
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake

__all__ = ["klaviyo_fake"]

ABANDON = timedelta(hours=4)  # profile.abandoned_cart_hours' default
BULK = ("POST", "/api/event-bulk-create-jobs")


def _point_at(site: Site, fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_KLAVIYO_KEY", fake.api_key)
    site.send_to(
        "kl",
        'kind = "klaviyo"\napi_key = "${CRMSYNC_TEST_KLAVIYO_KEY}"\n'
        f'base_url = "{fake.base_url}"\n'
        "[destinations.kl.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
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


def _ids(fake: FakeKlaviyo, metric: str) -> list[str]:
    return [e.unique_id for e in fake.events_named(metric)]


def test_orders_and_abandoned_carts_reach_klaviyo_once_each(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=150)
    _point_at(site, klaviyo_fake, monkeypatch)
    open_carts = _abandoned(jsonl(site.data / "carts.jsonl"))
    converted = open_carts[0]  # converted into an order in time: no Started Checkout
    edit_cart(site.data / "carts.jsonl", converted, completed_at="2026-10-31T10:00:00+03:00")

    code, report = site.run_report()
    assert code in (0, 5), report
    counts = report["events"]["kl"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 0, report

    orders = {str(o["id"]): o for o in jsonl(site.data / "orders.jsonl")}
    placed = _ids(klaviyo_fake, "Placed Order")
    assert len(placed) == len(set(placed)), "an order was placed twice"
    sent = {key.removeprefix("placed_order:shop:") for key in placed}
    with_email = {oid for oid, o in orders.items() if o.get("email")}
    assert with_email <= sent <= set(orders)
    assert Counter(_ids(klaviyo_fake, "Ordered Product")).most_common(1)[0][1] == 1
    assert len(_ids(klaviyo_fake, "Ordered Product")) == sum(
        len(orders[oid]["line_items"]) for oid in sent
    )
    cancelled = {oid for oid in sent if orders[oid]["status"] == "cancelled"}
    assert (
        cancelled
        and {k.removeprefix("cancelled_order:shop:") for k in _ids(klaviyo_fake, "Cancelled Order")}
        == cancelled
    )

    oid = sorted(with_email)[0]
    order = orders[oid]
    [event] = [e for e in klaviyo_fake.events_named("Placed Order") if e.unique_id.endswith(oid)]
    assert event.value == float(order["total_price"])
    assert event.value_currency == order["currency"]
    assert event.time == datetime.fromisoformat(order["created_at"])
    # older than the pipeline's live window (events_live_hours) when first sent: it goes
    # as a backfill, so no flow fires on a past order; recent ones go live
    live_since = datetime.fromisoformat(AS_OF) - timedelta(hours=24)
    assert event.backfill is (event.time < live_since)
    placed_events = klaviyo_fake.events_named("Placed Order")
    assert all(e.backfill is (e.time < live_since) for e in placed_events)
    assert any(not e.backfill for e in placed_events) and any(e.backfill for e in placed_events)
    assert [i["SKU"] for i in event.properties["Items"]] == [
        item["sku"] for item in order["line_items"]
    ]
    profile = klaviyo_fake.profile(order["email"])
    assert profile is not None and event.profile_id == profile.id

    started = {e.properties["CheckoutId"]: e for e in klaviyo_fake.events_named("Started Checkout")}
    assert set(started) == set(open_carts) - {converted}
    carts = {str(c["id"]): c for c in jsonl(site.data / "carts.jsonl")}
    some = open_carts[1]
    assert started[some].properties["CheckoutURL"] == carts[some]["abandoned_checkout_url"]
    assert started[some].value == float(carts[some]["total_price"])

    total = klaviyo_fake.event_count()
    klaviyo_fake.reset_counters()
    code, again = site.run_report()
    assert code in (0, 5), again
    assert klaviyo_fake.calls[BULK] == 0  # a second run sends nothing
    assert klaviyo_fake.event_count() == total

    # a refund after the order: one Refunded Order, once, however many runs follow
    refundable = next(
        o
        for o in orders.values()
        if o.get("email") and o["status"] == "fulfilled" and o["total_refunded"] == "0.00"
    )
    edit_order(
        site.data / "orders.jsonl",
        refundable["id"],
        total_refunded="100.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    before = set(_ids(klaviyo_fake, "Refunded Order"))
    site.run_report()
    site.run_report()
    new = [k for k in _ids(klaviyo_fake, "Refunded Order") if k not in before]
    assert new == [f"refunded_order:shop:{refundable['id']}:10000"]
    [refund] = [e for e in klaviyo_fake.events_named("Refunded Order") if e.unique_id == new[0]]
    assert refund.value == 100.0
    assert klaviyo_fake.duplicate_events == 0


def test_answers_lost_mid_push_and_a_rerun_record_each_event_once(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Klaviyo applied the calls but crmsync never heard back (a crash looks the same to
    the ledger): the next run sends them again and Klaviyo keeps each event once."""
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}", customers=60)
    _point_at(site, klaviyo_fake, monkeypatch)
    klaviyo_fake.inject(503, method="POST", path=BULK[1], times=1_000, after=True)
    code, first = site.run_report()
    assert first["events"]["kl"].get("failed", 0) > 0, first
    assert klaviyo_fake.event_count() > 0  # applied, unanswered
    klaviyo_fake.faults.pending.clear()

    code, second = site.run_report()
    assert code in (0, 5), second
    assert second["events"]["kl"].get("failed", 0) == 0, second
    recorded = [e.unique_id for events in klaviyo_fake.events.values() for e in events]
    assert len(recorded) == len(set(recorded))
    assert klaviyo_fake.duplicate_events > 0  # the re-sends Klaviyo dropped
    klaviyo_fake.reset_counters()
    site.run_report()
    assert klaviyo_fake.calls[BULK] == 0
