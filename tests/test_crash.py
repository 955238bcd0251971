"""A run killed with SIGKILL part-way, then run again, ends exactly like one clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from state import schema
from state.store import Store
from state.timeutil import to_ms
from tests.e2e import AS_OF, Site, ledger_count, ledger_rows, make_site, start_cli

pytestmark = pytest.mark.slow


def kill_after_batches(site: Site, *command: str, state_url: str | None = None) -> None:
    """Runs a crmsync command in its own process and SIGKILLs it once it wrote 3 batches
    (and, given ``state_url``, once the ledger acknowledges some: answers are recorded
    by a thread of their own, a batch or two behind the pushes)."""
    before = site.batch_files()
    process = start_cli(site, *command, output=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and (
        len(site.batch_files() - before) < 3 or (state_url and not ledger_count(state_url))
    ):
        assert time.monotonic() < deadline, f"crmsync {command[0]} wrote no batches"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_sigkill_part_way_then_rerun_equals_one_clean_run(
    tmp_path: Path, state_url: str, workers: int
) -> None:
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = make_site(tmp_path / "clean", clean_url, 1500, batch_size=20, workers=workers)
    clean.run_json()
    expected_outbox, expected_ledger = clean.record_hashes(), ledger_rows(clean_url)
    expected_files = clean.batch_files()
    assert len(expected_outbox) > 1400

    crashed = make_site(tmp_path / "crashed", state_url, 1500, batch_size=20, workers=workers)
    kill_after_batches(crashed, "run", state_url=state_url)
    acked = ledger_rows(state_url)
    assert 0 < len(acked) < len(expected_ledger), "the kill did not land part-way"

    report = crashed.run_json()  # takes over the dead process's lease, finishes the work
    assert report["status"] == "succeeded"
    assert crashed.record_hashes() == expected_outbox  # nobody twice, nobody missing
    assert crashed.batch_files() == expected_files  # the very same batch files
    assert ledger_rows(state_url) == expected_ledger
    status = crashed.cli("status", "--json")
    assert '"interrupted"' in status.stdout


def test_an_interrupted_backfill_resumes_and_repushes_each_person_once(
    tmp_path: Path, state_url: str
) -> None:
    url = state_url
    site = make_site(tmp_path, url, customers=1500, batch_size=20)
    synced = site.run_json()["destinations"]["out"]["create"]
    before = site.batch_files()

    kill_after_batches(site, "backfill", "--pipeline", "main", "--full")
    store = Store(url)
    interrupted = store.runs("main", 1)[0]
    assert interrupted.kind == "backfill" and interrupted.force_before is not None
    t = schema.ledger
    with store.engine.connect() as conn:
        acked_before_kill = conn.execute(
            sa.select(sa.func.count()).where(t.c.acked_at >= to_ms(interrupted.force_before))
        ).scalar_one()
    store.close()
    assert 0 < acked_before_kill < synced, "the kill did not land part-way"

    result = site.cli("backfill", "--pipeline", "main", "--full", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert any("resuming backfill" in w for w in report["warnings"])
    repushed = [r["person_key"] for r in site.records_in(site.batch_files() - before)]
    assert len(repushed) == len(set(repushed)) == synced  # everyone once, nobody twice
    assert report["destinations"]["out"]["update"] == synced - acked_before_kill
