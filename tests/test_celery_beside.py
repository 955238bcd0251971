"""A run on Celery workers does beside its phases what a run in one process does beside its
own: the coordinator names the records left out while the workers push (the names follow
from the planning alone), and gathers the plan tables' statistics while it collects, a
failure of which still fails the run with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distributed import coordinator
from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import (
    AS_OF,
    Site,
    assert_failed_keeping_pushes,
    break_plan_statistics,
    make_site,
    set_once_returned,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _on_workers(site: Site, broker: str, queue: str) -> None:
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(celery_table(broker, queue))


def test_the_records_left_out_are_named_while_the_workers_push(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push phase is held until the names are kept; named after it, as before, it
    waits in vain (10 s, then the test fails)."""
    broker = broker_or_skip("redis")
    site = make_site(tmp_path / "site", postgres_url, customers=120, dirty_rate=0.2)
    queue = new_queue()
    _on_workers(site, broker, queue)
    named = set_once_returned(monkeypatch, coordinator, "name_not_synced")
    held: list[bool] = []
    push = coordinator._Run.push

    def push_once_named(self: Any, plan: Any) -> None:
        held.append(named.wait(10))
        push(self, plan)

    monkeypatch.setattr(coordinator._Run, "push", push_once_named)
    with workers(site.config, tmp_path / "logs", broker, queue, 1) as running:
        code, report = site.run_report("--workers", "celery")
        assert code in (0, 5), running.log_text()[-3000:]
    assert held == [True]
    assert report["status"] in ("succeeded", "partial") and report["not_synced"]["total"] > 0
    assert report["destinations"]["out"]["ok"] == len(site.records()) > 0


def test_a_failure_gathering_the_plans_statistics_fails_the_run_on_workers(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = broker_or_skip("redis")
    site = make_site(tmp_path / "site", postgres_url, customers=60)
    queue = new_queue()
    _on_workers(site, broker, queue)
    break_plan_statistics(monkeypatch, "ANALYZE was cancelled")  # in the coordinator
    with workers(site.config, tmp_path / "logs", broker, queue, 1):
        result = site.cli("run", "--workers", "celery", "--as-of", AS_OF)
    assert_failed_keeping_pushes(postgres_url, result, "ANALYZE was cancelled")
