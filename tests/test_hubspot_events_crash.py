"""A run killed with SIGKILL while it writes HubSpot's commerce objects, then run again
over changed data (a refund, a cancellation), leaves in the fake HubSpot what one clean
run over the final data leaves: each order and cart once (no two objects with the same
external id), with the final statuses, and the same event ledger; a further run writes
nothing. HubSpot takes at most 100 events a call (not configurable), so the store is big
enough for several event batches, and the fake answers slowly enough for the kill to land
inside one: after its orders were made, before its answers were recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import Site, edit_order, start_cli
from tests.events_site import event_ledger_keys, events_site, jsonl
from tests.fakes.hubspot import FakeHubSpot
from tests.fakes.hubspot_commerce import live, objects, written

pytestmark = pytest.mark.slow

DEST = "hs"
CUSTOMERS = 600
LATENCY = 0.03  # seconds each fake answer takes: a batch of events spans several calls
FAST = 5_000  # the fake's and the client's rate window: no throttling in the way
WRITES = ("create_orders", "create_carts", "create_line_items", "update_orders", "archive_carts")
CHANGED_AT = "2026-11-01T08:59:00+00:00"  # before the run's --as-of (AS_OF)


def _fake() -> FakeHubSpot:
    return FakeHubSpot(per_ten_seconds=FAST, latency=LATENCY).start()


def _site(root: Path, url: str, fake: FakeHubSpot) -> Site:
    site = events_site(root, url, CUSTOMERS, batch_size=500)
    site.send_to(
        DEST,
        'kind = "hubspot"\naccess_token = "${CRMSYNC_TEST_HUBSPOT_TOKEN}"\n'
        f'base_url = "{fake.base_url}"\n'
        f"[destinations.{DEST}.rate_limits]\nper_ten_seconds = {FAST}\n"
        f"[destinations.{DEST}.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )
    return site


def _placed_acked(url: str) -> int:
    """Placed orders the event ledger holds an answer for (0 before its table exists)."""
    try:
        keys = event_ledger_keys(url, DEST)
    except Exception:  # the table does not exist yet, or the database is busy
        return 0
    return sum(k.startswith("placed_order:") for k in keys)


def _kill_with_orders_unrecorded(site: Site, fake: FakeHubSpot, url: str) -> None:
    """Kills the run once HubSpot holds orders the ledger has no answer for: a batch whose
    orders were made, killed before its answers were recorded (after a first batch was)."""
    process = start_cli(site, "run", output=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None:
        acked = _placed_acked(url)
        if acked and written(fake)["orders create"] > acked:
            break
        assert time.monotonic() < deadline, "the run wrote no orders"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"


def _change_source(site: Site) -> tuple[str, str]:
    """Refunds one fulfilled order and cancels one open one (the same ones in every
    site: the store is generated from one seed); returns their ids."""
    changed = datetime.fromisoformat(CHANGED_AT)
    orders = [
        o
        for o in jsonl(site.data / "orders.jsonl")
        if o.get("email") and datetime.fromisoformat(o["updated_at"]) < changed
    ]  # an update moves updated_at forward: the incremental read passes over one that does not
    refunded = next(o for o in orders if o["status"] == "fulfilled")
    cancelled = next(o for o in orders if o["status"] == "paid")
    edit_order(
        site.data / "orders.jsonl",
        refunded["id"],
        total_refunded=str(refunded["total_price"]),
        updated_at=CHANGED_AT,
    )
    edit_order(
        site.data / "orders.jsonl",
        cancelled["id"],
        status="cancelled",
        updated_at=CHANGED_AT,
    )
    return str(refunded["id"]), str(cancelled["id"])


def _by_external_id(fake: FakeHubSpot, kind: str, key: str) -> dict[str, Any]:
    made = live(fake, kind)
    counts = Counter(o.properties[key] for o in made)
    twice = sorted(ident for ident, n in counts.items() if n > 1)
    assert not twice, f"{kind} made more than once: {twice[:10]}"
    return {o.properties[key]: o for o in made}


def _as_made(fake: FakeHubSpot, kind: str, key: str) -> dict[str, Any]:
    """Each object's properties, its contact (by e-mail) and its line items' properties."""
    emails = {c.id: c.email for c in fake.contacts_by_id.values()}
    lines = objects(fake, "line_items")
    out: dict[str, Any] = {}
    for ident, made in _by_external_id(fake, kind, key).items():
        contacts = sorted(emails[i] for k, i, _ in made.associations if k == "contacts")
        linked = [i for k, i, _ in made.associations if k == "line_items"]
        items = sorted(sorted(lines[i].properties.items()) for i in linked)
        out[ident] = (made.properties, contacts, items)
    return out


def _writes(fake: FakeHubSpot) -> int:
    return sum(n for (_, name), n in fake.calls.items() if name in WRITES)


def test_sigkill_while_writing_orders_then_rerun_leaves_each_object_once(
    tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed_fake, clean_fake = _fake(), _fake()
    try:
        monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", crashed_fake.token)
        crashed = _site(tmp_path / "crashed", state_url, crashed_fake)
        _kill_with_orders_unrecorded(crashed, crashed_fake, state_url)
        acked = event_ledger_keys(state_url, DEST)
        made_before = len(live(crashed_fake, "orders"))
        refunded, cancelled = _change_source(crashed)  # the source changes between the runs
        crashed_fake.latency = 0.0
        report = crashed.run_json()
        assert report["events"][DEST].get("failed", 0) == 0, report

        monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", clean_fake.token)
        clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
        clean = _site(tmp_path / "clean", clean_url, clean_fake)
        assert _change_source(clean) == (refunded, cancelled)
        clean_fake.latency = 0.0
        clean.run_json()
        expected = event_ledger_keys(clean_url, DEST)
        assert 0 < len(acked) < len(expected), "the kill did not land part-way"
        assert 0 < made_before < len(live(clean_fake, "orders"))
        placed = sum(k.startswith("placed_order:") for k in acked)
        assert made_before > placed, "no order was made without its answer recorded"
        changes = (f"refunded_order:shop:{refunded}:", f"cancelled_order:shop:{cancelled}")
        assert all(any(k.startswith(c) for k in expected) for c in changes)
        assert not any(k.startswith(changes) for k in acked)  # sent by the re-run only

        orders = _as_made(crashed_fake, "orders", "hs_external_order_id")
        want = _as_made(clean_fake, "orders", "hs_external_order_id")
        assert orders.keys() == want.keys()
        assert orders == want
        assert orders[refunded][0]["hs_payment_status"] == "refunded"
        assert orders[cancelled][0]["hs_external_order_status"] == "cancelled"
        carts = _as_made(crashed_fake, "carts", "hs_external_cart_id")
        assert carts and carts == _as_made(clean_fake, "carts", "hs_external_cart_id")
        assert event_ledger_keys(state_url, DEST) == expected

        monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", crashed_fake.token)
        crashed_fake.reset_counters()
        crashed.run_json()
        assert _writes(crashed_fake) == 0  # a further run writes nothing
        assert not crashed_fake.violations and not clean_fake.violations
    finally:
        crashed_fake.stop()
        clean_fake.stop()
