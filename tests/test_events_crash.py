"""A run killed with SIGKILL while it sends events, then run again over changed data,
sends each event exactly once: the outbox ends holding what one clean run over the
final data sends (a batch in flight at the kill may be sent again, as vendors
de-duplicate by key)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import Site, edit_order, start_cli
from tests.events_site import event_ledger_keys, events, events_site, jsonl

pytestmark = pytest.mark.slow

BATCH = 20


def _event_files(site: Site) -> int:
    directory = site.outbox / "events"
    return len(list(directory.glob("*.jsonl"))) if directory.exists() else 0


def _kill_while_sending_events(site: Site, state_url: str) -> None:
    process = start_cli(site, "run", output=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and (
        _event_files(site) < 3 or not event_ledger_keys_safe(state_url)
    ):
        assert time.monotonic() < deadline, "the run sent no events"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def event_ledger_keys_safe(url: str) -> int:
    try:
        return len(event_ledger_keys(url))
    except Exception:  # the table does not exist yet, or the database is busy
        return 0


def _refund(site: Site) -> str:
    order = next(o for o in jsonl(site.data / "orders.jsonl") if o["status"] == "fulfilled")
    edit_order(
        site.data / "orders.jsonl",
        order["id"],
        total_refunded="50.00",
        updated_at="2026-10-31T12:00:00+03:00",
    )
    return f"refunded_order:shop:{order['id']}:5000"


def test_sigkill_while_sending_events_then_rerun_sends_each_event_once(
    tmp_path: Path, state_url: str
) -> None:
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = events_site(tmp_path / "clean", clean_url, 600, event_batch=BATCH, batch_size=500)
    refund_key = _refund(clean)
    clean.run_json()
    expected = {e["key"]: e for e in events(clean)}
    assert refund_key in expected

    crashed = events_site(tmp_path / "crashed", state_url, 600, event_batch=BATCH, batch_size=500)
    _kill_while_sending_events(crashed, state_url)
    acked = event_ledger_keys(state_url)
    assert 0 < len(acked) < len(expected), "the kill did not land part-way"
    assert refund_key not in acked

    _refund(crashed)  # the source changes between the runs
    report = crashed.run_json()
    assert report["status"] == "succeeded"
    sent = events(crashed)
    keys = [e["key"] for e in sent]
    assert set(keys) == set(expected)  # nothing missing, nothing extra
    assert len(keys) - len(set(keys)) <= BATCH  # at most the batch in flight, sent again
    assert keys.count(refund_key) == 1
    refunded = refund_key.split(":")[2]
    for event in sent:  # the same values as the clean run, but the refunded order's own
        if event["record_id"] == refunded:  # (sent before the edit: its status and time)
            continue
        want = expected[event["key"]]
        assert (event["value"], event["occurred_at"]) == (want["value"], want["occurred_at"])
    assert event_ledger_keys(state_url) == event_ledger_keys(clean_url)

    crashed.run_json()
    assert len(events(crashed)) == len(sent)  # and a further run sends nothing
