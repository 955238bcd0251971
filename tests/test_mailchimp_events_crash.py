"""A run killed with SIGKILL while it sends events into the fake Mailchimp, then run again
over changed data (a refund, a cancellation), leaves each order and cart in the store
once, with the statuses one clean run over the final data leaves: Mailchimp keeps
e-commerce objects, not events, so "exactly once" is each object created once (one
automation started or paused per order and cart) and none missing or extra."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.mailchimp.ecommerce_bodies import store_id
from tests.e2e import Site, consented, edit_order, start_cli
from tests.events_site import event_ledger_keys, events_site, jsonl
from tests.fakes.mailchimp import FakeMailchimp

pytestmark = pytest.mark.slow

BATCH = 10  # events per push (the destination's batch_size): many pushes per run
LATENCY = 0.01  # each call's time in the fake: the kill lands while orders are being sent
CUSTOMERS = 120
DEST = "mc"
STORE = store_id("crmsync-", "shop")
KEY_VARIABLE = "CRMSYNC_TEST_MAILCHIMP_CRASH_KEY"
# what the fake stamps itself, and what differs with the moment a status was sent
CANCELLED_AT = "2026-10-31T13:00:00+03:00"  # before AS_OF, as the refund's time
UNSTAMPED = ("created_at", "updated_at", "updated_at_foreign", "processed_at_foreign")


@pytest.fixture
def fakes() -> Iterator[tuple[FakeMailchimp, FakeMailchimp]]:
    """Two fakes (the crashed run's, the clean run's) sharing one key, so one environment
    variable names it for both; spec violations and consent problems fail the test."""
    crashed = FakeMailchimp(latency=LATENCY).start()
    clean = FakeMailchimp(api_key=crashed.api_key, latency=LATENCY).start()
    try:
        yield crashed, clean
    finally:
        crashed.stop()
        clean.stop()
    problems = [p for fake in (crashed, clean) for p in fake.violations + fake.consent_problems()]
    assert not problems, "\n".join(problems[:20])


def _site(root: Path, url: str, fake: FakeMailchimp) -> Site:
    site = events_site(root, url, CUSTOMERS, event_batch=BATCH)
    site.send_to(
        DEST,
        f'kind = "mailchimp"\napi_key = "${{{KEY_VARIABLE}}}"\n'
        f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\nbatch_size = {BATCH}\n'
        "[destinations.mc.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )
    fake.expect_consented(consented(site.data))
    return site


def _change(site: Site) -> tuple[str, str]:
    """A refund on a fulfilled order and a paid order cancelled, both before AS_OF;
    returns their ids."""
    orders = [o for o in jsonl(site.data / "orders.jsonl") if o.get("email")]
    refunded = next(o for o in orders if o["status"] == "fulfilled" and not _refunded(o))
    edit_order(
        site.data / "orders.jsonl",
        refunded["id"],
        total_refunded="5.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    paid = [o for o in orders if o["status"] == "paid" and o["created_at"] < CANCELLED_AT]
    cancelled = min(paid, key=lambda o: str(o["created_at"]))  # placed before it is cancelled
    edit_order(
        site.data / "orders.jsonl", cancelled["id"], status="cancelled", updated_at=CANCELLED_AT
    )
    return str(refunded["id"]), str(cancelled["id"])


def _refunded(order: dict[str, Any]) -> bool:
    return float(order.get("total_refunded") or 0) > 0


def _acked(url: str) -> int:
    try:
        return len(event_ledger_keys(url, DEST))
    except Exception:  # the table does not exist yet, or the database is busy
        return 0


def _kill_while_sending_orders(site: Site, url: str, fake: FakeMailchimp) -> None:
    process = start_cli(site, "run", output=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and (len(_orders(fake)) < 3 * BATCH or not _acked(url)):
        assert time.monotonic() < deadline, "the run sent no orders"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _orders(fake: FakeMailchimp) -> dict[str, dict[str, Any]]:
    store = fake.stores.get(STORE)
    return dict(store.orders) if store is not None else {}


def _objects(fake: FakeMailchimp) -> dict[str, dict[str, dict[str, Any]]]:
    """The store's orders and carts, without the fields stamped at the time of sending."""
    store = fake.stores[STORE]
    return {
        kind: {
            oid: {k: v for k, v in found.items() if k not in UNSTAMPED}
            for oid, found in objects.items()
        }
        for kind, objects in (("orders", store.orders), ("carts", store.carts))
    }


def _created(fake: FakeMailchimp) -> Counter[tuple[str, str]]:
    """Each order and cart the store took as new (starting or, paused, not starting an
    automation): once each, whatever was resent."""
    arrivals = fake.triggers + fake.paused
    return Counter((what, record) for _, what, record in arrivals if what in ("order", "cart"))


def _noted(fake: FakeMailchimp) -> Counter[tuple[str, str]]:
    """Everything the store took as starting an automation (paused or not)."""
    return Counter((what, record) for _, what, record in fake.triggers + fake.paused)


def test_sigkill_while_sending_orders_then_rerun_leaves_each_object_once(
    tmp_path: Path,
    state_url: str,
    fakes: tuple[FakeMailchimp, FakeMailchimp],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashed_fake, clean_fake = fakes
    monkeypatch.setenv(KEY_VARIABLE, crashed_fake.api_key)

    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = _site(tmp_path / "clean", clean_url, clean_fake)
    _change(clean)
    clean_report = clean.run_json()
    assert clean_report["events"][DEST].get("failed", 0) == 0, clean_report

    crashed = _site(tmp_path / "crashed", state_url, crashed_fake)
    _kill_while_sending_orders(crashed, state_url, crashed_fake)
    acked = event_ledger_keys(state_url, DEST)
    expected = event_ledger_keys(clean_url, DEST)
    assert 0 < len(acked) < len(expected), "the kill did not land part-way"
    assert 0 < len(_orders(crashed_fake)) < len(_orders(clean_fake))

    refunded, cancelled = _change(crashed)  # the source changes between the runs
    report = crashed.run_json()
    assert report["status"] == clean_report["status"], report  # partial: orders without e-mail
    assert report["events"][DEST].get("failed", 0) == 0, report

    final = _objects(crashed_fake)
    want = _objects(clean_fake)
    assert set(final["orders"]) == set(want["orders"])  # nothing missing, nothing extra
    assert set(final["carts"]) == set(want["carts"])
    assert final == want  # the same objects, with the final statuses
    assert final["orders"][refunded]["financial_status"] in ("refunded", "partially_refunded")
    assert final["orders"][cancelled]["financial_status"] == "cancelled"
    created = _created(crashed_fake)
    assert created == _created(clean_fake)
    assert max(created.values()) == 1  # each order and cart created once
    # no status change noted twice: the batch in flight at the kill is sent again, but its
    # placed orders carry their current statuses, so their status events change nothing.
    # Only an order the killed run had sent before it was changed notes its change, once
    # (the clean run creates that order with its final status: there is no change to note).
    again = _noted(crashed_fake) - _noted(clean_fake)
    assert {record for _, record in again} <= {refunded, cancelled}, again
    assert max(again.values(), default=0) == 1, again
    assert not crashed_fake.stores[STORE].is_syncing  # the interrupted backfill resumed
    assert event_ledger_keys(state_url, DEST) == expected

    crashed_fake.reset_counters()
    crashed.run_json()
    assert crashed_fake.writes() == 0  # and a further run sends nothing
