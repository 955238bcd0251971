"""``crmsync plan`` with events on (issue 14): the events a run would send, per destination
and kind, and with ``--person`` one person's pending events with their keys and times;
a plan sends and records nothing, and the run after it sends exactly what it showed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.e2e import AS_OF, Site, edit_order
from tests.events_site import event_ledger_keys, events, events_site, jsonl


def _plan(site: Site, *extra: str) -> Any:
    result = site.cli("plan", "--as-of", AS_OF, "--json", *extra)
    assert result.exit_code in (0, 5), result.output
    return json.loads(result.stdout)


def test_plan_counts_per_kind_what_the_run_then_sends_and_sends_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    site = events_site(tmp_path, url)
    [planned] = _plan(site)
    shown = planned["events"]["out"]
    assert shown["would_send"] > 0 and shown["kinds"]["placed_order"] > 0
    assert events(site) == [] and event_ledger_keys(url) == set()  # nothing sent or recorded

    site.run_json()
    sent = Counter(e["kind"] for e in events(site))
    assert dict(sent) == shown["kinds"]
    assert sum(sent.values()) == shown["would_send"]

    [after] = _plan(site)
    assert after["events"]["out"].get("would_send", 0) == 0  # the run sent them all

    order = next(
        o
        for o in jsonl(site.data / "orders.jsonl")
        if o["status"] == "fulfilled" and o.get("email") and o["total_refunded"] == "0.00"
    )
    edit_order(
        site.data / "orders.jsonl",
        order["id"],
        total_refunded="20.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    [refund] = _plan(site)
    assert refund["events"]["out"]["would_send"] == 1
    assert refund["events"]["out"]["kinds"] == {"refunded_order": 1}
    text = site.cli("plan", "--as-of", AS_OF, "--no-pull").output
    assert "-> out events: would_send 1 (refunded_order 1)" in text


def test_plan_person_shows_the_persons_pending_events_with_keys_and_times(
    tmp_path: Path,
) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    _plan(site)  # stages the store (a plan reads the sources, sends nothing)
    orders = jsonl(site.data / "orders.jsonl")
    carts = {c["customer_id"] for c in jsonl(site.data / "carts.jsonl") if c.get("customer_id")}
    counts = Counter(o["customer_id"] for o in orders if o.get("customer_id"))
    customer = next(c for c, n in counts.most_common() if c in carts and n > 1)
    email = next(o["email"] for o in orders if o.get("customer_id") == customer)

    [person] = _plan(site, "--person", email)
    pending = person["events"]["out"]
    keys = {e["key"]: e for e in pending["events"]}
    assert pending["already_sent"] == 0 and keys
    assert {e["name"] for e in pending["events"]} <= {
        "placed_order",
        "ordered_product",
        "fulfilled_order",
        "cancelled_order",
        "refunded_order",
        "started_checkout",
    }

    site.run_json()
    theirs = {e["key"]: e for e in events(site) if e["email"] == email}
    assert set(keys) == set(theirs)  # exactly what the run sent of theirs
    for key, event in theirs.items():
        assert keys[key]["occurred_at"] == event["occurred_at"]
        assert keys[key]["historical"] == event["historical"]

    [later] = _plan(site, "--person", email)
    assert later["events"]["out"]["events"] == []  # the next run has nothing of theirs
    text = site.cli("plan", "--person", email, "--as-of", AS_OF).output
    assert "-> out events: would send 0" in text

    order = next(o for o in orders if o.get("customer_id") == customer)
    edit_order(  # staged by a plan, pending for the next run: shown with key and time
        site.data / "orders.jsonl",
        order["id"],
        total_refunded="5.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    _plan(site)
    [refund] = _plan(site, "--person", email)
    [pending_refund] = refund["events"]["out"]["events"]
    assert pending_refund["key"] == f"refunded_order:shop:{order['id']}:500"
    assert pending_refund["occurred_at"] == "2026-10-31T09:00:00+00:00"
    assert pending_refund["value"] == "5.00"
    assert refund["events"]["out"]["already_sent"] > 0  # the order's other events: sent
    text = site.cli("plan", "--person", email, "--as-of", AS_OF).output
    shown = f"refunded_order at 2026-10-31T09:00:00+00:00, 5.00 TRY: {pending_refund['key']}"
    assert shown in text  # the outbox's name for the kind, its time, value and key
