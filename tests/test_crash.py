"""A run killed with SIGKILL part-way, then run again, ends exactly like one clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from state import schema
from state.store import Store
from tests.e2e import AS_OF, Site, make_site

pytestmark = pytest.mark.slow


def ledger(url: str) -> set[tuple[str, str, str, str]]:
    store = Store(url)
    t = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.person_key, t.c.payload_hash, t.c.segments, t.c.status))
        out = {tuple(r) for r in rows}
    store.close()
    return out  # type: ignore[return-value]


def outbox_records(site: Site) -> list[tuple[str, str]]:
    return sorted((str(r["person_key"]), str(r["payload_hash"])) for r in site.records())


def start_run(site: Site) -> subprocess.Popen[bytes]:
    code = "from crmsync.cli import main; main()"
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "run",
            "--config",
            str(site.config),
            "--as-of",
            AS_OF,
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )


def test_sigkill_part_way_then_rerun_equals_one_clean_run(tmp_path: Path, state_url: str) -> None:
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = make_site(tmp_path / "clean", clean_url, customers=1500, batch_size=20)
    clean.run_json()
    expected_outbox, expected_ledger = outbox_records(clean), ledger(clean_url)
    assert len(expected_outbox) > 1400

    crashed = make_site(tmp_path / "crashed", state_url, customers=1500, batch_size=20)
    process = start_run(crashed)
    deadline = time.monotonic() + 120
    while len(crashed.batch_files()) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "the run wrote no batches"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    acked = ledger(state_url)
    assert 0 < len(acked) < len(expected_ledger), "the kill did not land part-way"

    report = crashed.run_json()  # takes over the dead process's lease, finishes the work
    assert report["status"] == "succeeded"
    assert outbox_records(crashed) == expected_outbox  # nobody twice, nobody missing
    assert ledger(state_url) == expected_ledger
    status = crashed.cli("status", "--json")
    assert '"interrupted"' in status.stdout
