"""``crmsync backfill --workers celery``: a backfill whose work goes to Celery workers
(real RabbitMQ, PostgreSQL state) re-pushes whom the same backfill in one process
re-pushes, and ends in the same ledger and outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, ledger_rows, make_site

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SINCE = "2026-10-01T00:00:00+00:00"  # a month before the store's clock: some of it changed


def _backfill(site: Site, *how: str) -> dict[str, Any]:
    result = site.cli("backfill", "--pipeline", "main", *how, "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports[0]


@pytest.mark.parametrize("how", [("--full",), ("--since", SINCE)])
def test_a_backfill_on_workers_re_pushes_whom_one_process_does(
    tmp_path: Path, postgres_url: str, how: tuple[str, ...]
) -> None:
    broker = broker_or_skip("amqp")
    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    one = make_site(tmp_path / "one", one_url, customers=300, batch_size=40)
    one.run_json()
    expected = _backfill(one, *how)

    site = make_site(tmp_path / "celery", postgres_url, customers=300, batch_size=40)
    queue = new_queue()
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(celery_table(broker, queue))
    with workers(site.config, tmp_path / "logs", broker, queue, 1) as running:
        first = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
        assert first.exit_code == 0, running.log_text()[-3000:]
        report = _backfill(site, *how, "--workers", "celery")
    assert report["kind"] == "backfill"
    assert report["destinations"] == expected["destinations"]
    pushed = expected["destinations"]["out"]
    assert pushed.get("update", 0) + pushed.get("create", 0) > 0  # it did re-push people
    assert report["pulled"] == expected["pulled"]
    assert site.record_hashes() == one.record_hashes()
    assert ledger_rows(postgres_url) == ledger_rows(one_url)
