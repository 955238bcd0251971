"""A run killed with SIGKILL while it sends events to the fake Klaviyo, then run again
over changed data (a refund, a cancellation), records each event exactly once: Klaviyo
ends holding what one clean run over the final data sends, and the event ledgers agree.

Klaviyo keeps one event per profile, metric and unique id and drops a repeat silently, so
the batch in flight at the kill may be sent again: the fake's ``duplicate_events`` counts
those, and they are at most one batch (batches go one at a time)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import Site, consented, edit_order, start_cli
from tests.events_site import event_ledger_keys, events_site, jsonl
from tests.fakes.klaviyo import FakeEvent, FakeKlaviyo

pytestmark = pytest.mark.slow

CUSTOMERS = 100
BATCH = 100  # events per bulk create call (Klaviyo paces these calls: 2.5 a second)
LATENCY = 0.02  # seconds per request: the run spends long enough sending events
KEY_VARIABLE = "CRMSYNC_TEST_KLAVIYO_KEY"
DESTINATION = "kl"
EDITED_AT = "2026-10-31T12:00:00+03:00"  # before the run's --as-of


@pytest.fixture
def fakes() -> Iterator[tuple[FakeKlaviyo, FakeKlaviyo]]:
    """The crashed run's Klaviyo and the clean run's, sharing an API key (the subprocess
    reads it from the environment); spec violations and consent problems fail the test."""
    crashed = FakeKlaviyo(latency=LATENCY).start()
    clean = FakeKlaviyo(api_key=crashed.api_key).start()
    try:
        yield crashed, clean
    finally:
        crashed.stop()
        clean.stop()
    problems = [
        *crashed.violations,
        *crashed.consent_problems(),
        *clean.violations,
        *clean.consent_problems(),
    ]
    assert not problems, "\n".join(problems[:20])


def _site(root: Path, url: str, fake: FakeKlaviyo) -> Site:
    site = events_site(root, url, customers=CUSTOMERS)
    site.send_to(
        DESTINATION,
        f'kind = "klaviyo"\napi_key = "${{{KEY_VARIABLE}}}"\n'
        f'base_url = "{fake.base_url}"\n'
        f"[destinations.{DESTINATION}.jobs]\nevents_per_call = {BATCH}\n"
        f"[destinations.{DESTINATION}.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )
    fake.expect_consented(consented(site.data))
    return site


def _acknowledged(url: str) -> int:
    try:
        return len(event_ledger_keys(url, DESTINATION))
    except Exception:  # the table does not exist yet, or the database is busy
        return 0


def _kill_while_sending_events(site: Site, url: str, fake: FakeKlaviyo) -> None:
    process = start_cli(site, "run", output=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and (fake.event_count() < 3 * BATCH or _acknowledged(url) == 0):
        assert time.monotonic() < deadline, "the run sent no events"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"


def _pick_edits(site: Site, sent: set[str]) -> tuple[str, str]:
    """(an order to refund, an order to cancel): a fulfilled order and an open one (paid,
    not shipped), both with an e-mail (Klaviyo events need a profile), preferring orders
    whose Placed Order the killed run recorded (so their new events follow older ones)."""
    orders = [o for o in jsonl(site.data / "orders.jsonl") if o.get("email")]

    def first(status: tuple[str, ...]) -> str:
        found = [str(o["id"]) for o in orders if o["status"] in status]
        found.sort(key=lambda oid: f"placed_order:shop:{oid}" not in sent)
        assert found, f"the sample has no order {status}"
        return found[0]

    return first(("fulfilled",)), first(("paid", "processing", "pending"))


def _edit(site: Site, refunded: str, cancelled: str) -> None:
    path = site.data / "orders.jsonl"
    edit_order(path, refunded, total_refunded="5.00", updated_at=EDITED_AT)
    edit_order(path, cancelled, status="cancelled", cancelled_at=EDITED_AT, updated_at=EDITED_AT)


def _recorded(fake: FakeKlaviyo) -> list[FakeEvent]:
    return [event for found in fake.events.values() for event in found]


def _by_identity(fake: FakeKlaviyo) -> dict[tuple[str, str, str], FakeEvent]:
    """(profile e-mail, metric, unique id) -> event; each identity recorded once."""
    labels = {pid: profile.label for pid, profile in fake.profiles.items()}
    out: dict[tuple[str, str, str], FakeEvent] = {}
    for event in _recorded(fake):
        identity = (labels[event.profile_id], event.metric, event.unique_id)
        assert identity not in out, f"{identity} recorded twice"
        out[identity] = event
    return out


def _content(event: FakeEvent) -> tuple[Any, ...]:
    return (event.time, event.value, event.value_currency, event.backfill, event.properties)


def test_sigkill_while_sending_events_to_klaviyo_then_rerun_records_each_event_once(
    tmp_path: Path,
    fakes: tuple[FakeKlaviyo, FakeKlaviyo],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashed_fake, clean_fake = fakes
    monkeypatch.setenv(KEY_VARIABLE, crashed_fake.api_key)

    url = f"sqlite:///{tmp_path / 'crashed.db'}"
    crashed = _site(tmp_path / "crashed", url, crashed_fake)
    _kill_while_sending_events(crashed, url, crashed_fake)
    acked = event_ledger_keys(url, DESTINATION)
    before = {e.unique_id for e in _recorded(crashed_fake)}
    assert acked and acked <= before  # acknowledged means recorded

    refunded, cancelled = _pick_edits(crashed, before)
    cancel_key = f"cancelled_order:shop:{cancelled}"
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = _site(tmp_path / "clean", clean_url, clean_fake)  # the same generated store
    _edit(clean, refunded, cancelled)
    clean.run_json()
    expected = _by_identity(clean_fake)
    refunds = [i for i in expected if i[2].startswith(f"refunded_order:shop:{refunded}:")]
    assert len(refunds) == 1 and any(i[2] == cancel_key for i in expected)
    assert len(acked) < len(expected) and len(before) < len(expected), "the kill came late"

    _edit(crashed, refunded, cancelled)  # the source changes between the runs
    report = crashed.run_json()
    assert report["status"] == "succeeded", report
    assert report["events"][DESTINATION].get("failed", 0) == 0, report

    got = _by_identity(crashed_fake)  # nothing recorded twice
    unique_ids = [e.unique_id for e in _recorded(crashed_fake)]
    assert len(unique_ids) == len(set(unique_ids))
    assert set(got) == set(expected)  # nothing missing, nothing extra
    assert crashed_fake.duplicate_events <= BATCH  # at most the batch in flight, again
    assert refunds[0] in got and not {refunds[0][2], cancel_key} & before
    edited = {refunded, cancelled}
    for identity, event in got.items():  # the same content as the clean run's, but the
        if identity[2] in before and identity[2].split(":")[2] in edited:  # edited orders'
            continue  # events the killed run sent: they carry the status before the edit
        assert _content(event) == _content(expected[identity]), identity
    assert event_ledger_keys(url, DESTINATION) == event_ledger_keys(clean_url, DESTINATION)

    total = crashed_fake.event_count()
    crashed_fake.reset_counters()
    crashed.run_json()
    assert crashed_fake.calls[("POST", "/api/event-bulk-create-jobs")] == 0  # nothing sent
    assert crashed_fake.event_count() == total
