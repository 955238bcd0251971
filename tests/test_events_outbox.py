"""Events end to end against the outbox: a generated store's orders and abandoned carts
arrive once each with their values; re-runs, refunds, conversions, time zones and
backfills send nothing twice and skip nothing."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from tests.e2e import AS_OF, edit_order
from tests.events_site import by_key, edit_cart, event_ledger_keys, events, events_site, jsonl

ABANDON = timedelta(hours=4)  # profile.abandoned_cart_hours' default


def _abandoned(carts: list[dict[str, object]], as_of: datetime) -> set[str]:
    return {
        str(c["id"])
        for c in carts
        if not c.get("completed_at")
        and datetime.fromisoformat(str(c.get("updated_at") or c["created_at"])) + ABANDON <= as_of
    }


def test_orders_and_abandoned_carts_arrive_once_each_with_their_values(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    carts = jsonl(site.data / "carts.jsonl")
    open_carts = sorted(_abandoned(carts, datetime.fromisoformat(AS_OF)))
    converted = open_carts[0]  # converted into an order: never abandoned
    edit_cart(site.data / "carts.jsonl", converted, completed_at="2026-10-31T10:00:00+03:00")

    report = site.run_json()
    sent = events(site)
    keys = [e["key"] for e in sent]
    assert len(keys) == len(set(keys)), "an event was sent twice"
    orders = jsonl(site.data / "orders.jsonl")
    kinds = Counter(e["kind"] for e in sent)
    assert kinds["placed_order"] == len(orders)
    assert kinds["ordered_product"] == sum(len(o["line_items"]) for o in orders)
    assert kinds["cancelled_order"] == sum(o["status"] == "cancelled" for o in orders)
    assert report["events"]["out"]["ok"] == len(sent)

    first = by_key(sent)
    order = orders[0]
    placed = first[f"placed_order:shop:{order['id']}"]
    assert placed["value"] == order["total_price"]
    assert placed["currency"] == order["currency"]
    assert placed["email"] == order["email"] and placed["customer_id"] == order["customer_id"]
    instant = datetime.fromisoformat(order["created_at"])
    assert datetime.fromisoformat(placed["occurred_at"]) == instant
    assert placed["occurred_at"].endswith("+00:00")
    item = order["line_items"][0]
    assert placed["lines"][0]["sku"] == item["sku"]
    assert placed["lines"][0]["quantity"] == item["quantity"]
    assert placed["lines"][0]["unit_price"] == item["price"]

    started = {e["record_id"]: e for e in sent if e["kind"] == "started_checkout"}
    assert set(started) == set(open_carts) - {converted}
    assert converted not in started
    cart = next(c for c in carts if c["id"] == open_carts[1])
    assert started[open_carts[1]]["checkout_url"] == cart["abandoned_checkout_url"]
    assert started[open_carts[1]]["value"] == cart["total_price"]
    assert len(started[open_carts[1]]["lines"]) == len(cart["line_items"])

    again = site.run_json()
    assert events(site) == sent  # a second run sends nothing
    assert again["events"]["out"].get("ok", 0) == 0

    # status tells what each destination acknowledged, per kind
    status = json.loads(site.cli("status", "--json").stdout)
    shown = status[0] if isinstance(status, list) else status
    assert shown["events"]["out"] == dict(kinds)
    assert "events out: " in site.cli("status").stdout


def test_a_refund_after_the_order_sends_the_refund_event_once(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    site.run_json()
    orders = jsonl(site.data / "orders.jsonl")
    order = next(o for o in orders if o["status"] == "fulfilled" and o["total_refunded"] == "0.00")
    edit_order(
        site.data / "orders.jsonl",
        order["id"],
        total_refunded="100.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    before = {e["key"] for e in events(site)}
    site.run_json()
    site.run_json()
    new = [e for e in events(site) if e["key"] not in before]
    assert [e["key"] for e in new] == [f"refunded_order:shop:{order['id']}:10000"]
    assert new[0]["value"] == "100.00"
    assert new[0]["occurred_at"] == "2026-10-31T09:00:00+00:00"

    edit_order(  # a further refund is a new event; the first is not sent again
        site.data / "orders.jsonl",
        order["id"],
        total_refunded="250.00",
        updated_at="2026-10-31T13:00:00+03:00",
    )
    site.run_json()
    newer = [e["key"] for e in events(site) if e["key"] not in before]
    assert sorted(newer) == sorted(
        [f"refunded_order:shop:{order['id']}:10000", f"refunded_order:shop:{order['id']}:25000"]
    )


def test_an_order_placed_at_2330_in_istanbul_keeps_its_instant(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    order = jsonl(site.data / "orders.jsonl")[0]
    edit_order(
        site.data / "orders.jsonl",
        order["id"],
        created_at="2026-10-31T23:30:00+03:00",
        updated_at="2026-10-31T23:45:00+03:00",
        status="fulfilled",
    )
    site.run_json()
    sent = by_key(events(site))
    assert sent[f"placed_order:shop:{order['id']}"]["occurred_at"] == "2026-10-31T20:30:00+00:00"
    assert sent[f"fulfilled_order:shop:{order['id']}"]["occurred_at"] == (
        "2026-10-31T20:45:00+00:00"
    )


def test_a_cart_is_abandoned_once_its_time_passes_and_closed_once_converted(
    tmp_path: Path,
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    cart = jsonl(site.data / "carts.jsonl")[0]
    # changed one hour before the run: not abandoned yet
    edit_cart(site.data / "carts.jsonl", cart["id"], updated_at="2026-11-01T11:00:00+03:00")
    site.run_json()
    key = f"started_checkout:shop:{cart['id']}"
    assert key not in by_key(events(site))

    later = "2026-11-01T14:00:00+00:00"  # five hours after its last change
    assert site.cli("run", "--as-of", later, "--json").exit_code == 0
    started = [e for e in events(site) if e["key"] == key]
    assert len(started) == 1 and started[0]["checkout_url"] == cart["abandoned_checkout_url"]

    edit_cart(
        site.data / "carts.jsonl",
        cart["id"],
        completed_at="2026-11-01T16:30:00+03:00",
        updated_at="2026-11-01T16:30:00+03:00",
    )
    for _ in range(2):
        assert site.cli("run", "--as-of", later, "--json").exit_code == 0
    closed = [e for e in events(site) if e["kind"] == "checkout_closed"]
    assert [e["key"] for e in closed] == [f"checkout_closed:shop:{cart['id']}"]
    assert [e["key"] for e in events(site)].count(key) == 1


def test_a_cart_converted_before_its_abandonment_time_sends_nothing(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    cart = jsonl(site.data / "carts.jsonl")[0]
    edit_cart(site.data / "carts.jsonl", cart["id"], updated_at="2026-11-01T11:00:00+03:00")
    site.run_json()
    edit_cart(
        site.data / "carts.jsonl",
        cart["id"],
        completed_at="2026-11-01T11:30:00+03:00",
        updated_at="2026-11-01T11:30:00+03:00",
    )
    assert site.cli("run", "--as-of", "2026-11-02T09:00:00+00:00", "--json").exit_code == 0
    assert not [e for e in events(site) if e["record_id"] == cart["id"]]


def test_backfill_events_sends_past_events_as_historical_and_none_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    site = events_site(tmp_path, url)
    site.run_json()
    sent_before = len(events(site))
    # a second outbox joins the pipeline: new events only, until a backfill
    text = site.config.read_text(encoding="utf-8")
    archive = tmp_path / "archive"
    text = text.replace(
        "[pipelines.main]",
        f'[destinations.archive]\nkind = "outbox"\ndirectory = "{archive}"\n\n[pipelines.main]',
    )
    text = text.replace('destinations = ["out"]', 'destinations = ["out", "archive"]')
    site.config.write_text(text, encoding="utf-8")

    since = "2026-06-01"
    result = site.cli(
        "backfill", "--pipeline", "main", "--since", since, "--events", "--as-of", AS_OF, "--json"
    )
    assert result.exit_code == 0, result.stdout
    from connectors.outbox import read_events

    archived = read_events(archive / "archive")
    orders = jsonl(site.data / "orders.jsonl")
    recent = {o["id"] for o in orders if o["created_at"] >= since}
    placed = {e["record_id"] for e in archived if e["kind"] == "placed_order"}
    assert placed == recent and recent
    assert all(e["historical"] for e in archived)
    assert len(events(site)) == sent_before  # the first outbox had them all: none again

    again = site.cli(
        "backfill", "--pipeline", "main", "--since", since, "--events", "--as-of", AS_OF, "--json"
    )
    assert again.exit_code == 0
    assert len(read_events(archive / "archive")) == len(archived)
    assert len(event_ledger_keys(url, "archive")) == len(archived)


def test_events_older_than_the_live_window_go_as_historical_so_no_automation_fires(
    tmp_path: Path,
) -> None:
    """A first run with events on finds years of past orders: only what happened within
    ``events_live_hours`` of the run goes live; the rest is historical."""
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    site.config.write_text(site.config.read_text() + "events_live_hours = 72\n")
    site.run_json()
    sent = events(site)
    as_of = datetime.fromisoformat(AS_OF)
    cutoff = as_of - timedelta(hours=72)
    live = [e for e in sent if not e["historical"]]
    old = [e for e in sent if e["historical"]]
    assert live and old  # the sample store has both
    assert all(datetime.fromisoformat(e["occurred_at"]) >= cutoff for e in live)
    assert all(datetime.fromisoformat(e["occurred_at"]) < cutoff for e in old)
