"""A Celery worker SIGKILLed in the middle of a push (the fake Mailchimp has the batch,
the ledger does not know it), its task delivered again to another worker, then the
source changed and the pipeline run again on the workers: the fake Mailchimp and the
ledger end exactly as one clean run over the final data leaves them."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import Site, consented, edit_order, ledger_rows, make_site, start_cli
from tests.fakes.mailchimp import FakeMailchimp

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CUSTOMERS = 400
KEY_VARIABLE = "CRMSYNC_TEST_CELERY_MAILCHIMP_KEY"


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeMailchimp, FakeMailchimp]]:
    """The crashed run's fake and the clean run's, sharing one key (in the environment,
    which the workers inherit); spec violations and consent problems fail the test."""
    crashed = FakeMailchimp().start()
    clean = FakeMailchimp(api_key=crashed.api_key).start()
    monkeypatch.setenv(KEY_VARIABLE, crashed.api_key)
    try:
        yield crashed, clean
    finally:
        crashed.stop()
        clean.stop()
    problems = [p for fake in (crashed, clean) for p in fake.violations + fake.consent_problems()]
    assert not problems, "\n".join(problems[:20])


def _site(root: Path, url: str, fake: FakeMailchimp) -> Site:
    site = make_site(root, url, CUSTOMERS)
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{{KEY_VARIABLE}}}"\n'
        f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\nbatch_size = 10\n'
        # two workers, each with its own budget (no [celery] shared_budget here), stay
        # within the fake's 10 connections together: at 10 each, their pushes at once
        # met 429s until the retries gave up, in about one run of three
        "max_connections = 5\n"
        "[destinations.mc.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )
    fake.expect_consented(consented(site.data))
    return site


def _change_the_source(site: Site) -> None:
    """Renames every tenth customer and cancels a paid order, before the test's time."""
    path = site.data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows[::10]:
        row["first_name"] += "x"
        row["updated_at"] = "2026-10-31T12:00:00+03:00"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    orders = [json.loads(line) for line in (site.data / "orders.jsonl").read_text().splitlines()]
    paid = sorted(o["id"] for o in orders if isinstance(o, dict) and o.get("status") == "paid")
    edit_order(
        site.data / "orders.jsonl",
        paid[0],
        status="cancelled",
        updated_at="2026-10-31T13:00:00+03:00",
    )


def _members(fake: FakeMailchimp) -> dict[str, tuple[str, dict[str, Any], list[str]]]:
    """Per address: the status, the merge fields and the tags the fake holds."""
    return {
        m["email_address"].lower(): (
            m["status"],
            dict(m["merge_fields"]),
            sorted(fake.tags_of(m["email_address"])),
        )
        for m in fake.audience.members.values()
    }


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 120) -> int:
    """The process id a stalled worker wrote to ``path``."""
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before any worker stalled: {out[-2000:]} {err[-2000:]}")
        assert time.monotonic() < deadline, "no worker pushed a batch"
        time.sleep(0.02)
    return int(path.read_text())


def test_a_worker_killed_mid_push_then_a_rerun_over_changed_data_ends_like_one_clean_run(
    tmp_path: Path, postgres_url: str, fakes: tuple[FakeMailchimp, FakeMailchimp]
) -> None:
    broker = broker_or_skip("amqp")
    crashed_fake, clean_fake = fakes
    site = _site(tmp_path / "crashed", postgres_url, crashed_fake)
    queue = new_queue()
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(celery_table(broker, queue))
    stall = tmp_path / "stalled"
    logs = tmp_path / "logs"
    with workers(site.config, logs, broker, queue, CRMSYNC_TEST_STALL_FILE=str(stall)) as running:
        process = start_cli(site, "run", "--workers", "celery", "--json")
        killed = _wait_for(stall, process)
        assert crashed_fake.audience.members, "the stalled batch was not pushed"
        running.kill(killed)  # its message goes back to the queue: the other worker takes it
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:] + running.log_text()[-3000:]
        first = json.loads(out)[0]
        assert first["status"] == "succeeded"
        # the task the killed worker held was delivered again, and done by the other one
        taken = r"Task crmsync.push_batch\[([0-9a-f-]+)\] received"
        held = re.findall(taken, running.log_of(killed))
        assert f"push_batch[{held[-1]}] succeeded" in running.log_text()
        assert first["destinations"]["mc"]["ok"] == first["destinations"]["mc"]["create"]

        _change_the_source(site)
        result = site.cli("run", "--workers", "celery", "--as-of", first["as_of"], "--json")
        assert result.exit_code == 0, result.output
        again = json.loads(result.stdout)[0]
    assert again["status"] == "succeeded"
    assert again["destinations"]["mc"]["update"] >= CUSTOMERS // 20  # the renamed, mostly

    clean = _site(tmp_path / "clean", f"sqlite:///{tmp_path / 'clean.db'}", clean_fake)
    _change_the_source(clean)
    assert clean.run_json()["status"] == "succeeded"

    assert _members(crashed_fake) == _members(clean_fake)  # nobody lost, doubled or stale
    assert ledger_rows(postgres_url) == ledger_rows(f"sqlite:///{tmp_path / 'clean.db'}")
