"""A pipeline run on real Celery workers (RabbitMQ or Redis, PostgreSQL state) ends in
exactly the state of the in-process run over the same data: the same ledger, the same
outbox records and events, the same report; a further run finds nothing to do. Every
message published twice (a broker's redelivery) changes none of it, and no batch is
pushed twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from distributed import dispatch
from distributed.dispatch import Task
from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, ledger_rows, make_site
from tests.events_site import by_key, events, events_site

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CUSTOMERS = 600


def on_workers(site: Site, broker: str, queue: str) -> None:
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(celery_table(broker, queue))


def celery_run(site: Site) -> dict[str, Any]:
    result = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports[0]


def test_a_run_on_celery_workers_ends_like_the_run_in_one_process(
    tmp_path: Path, postgres_url: str
) -> None:
    broker = broker_or_skip("amqp")
    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    one = make_site(tmp_path / "one", one_url, customers=CUSTOMERS, batch_size=40)
    expected = one.run_json()

    site = make_site(tmp_path / "celery", postgres_url, customers=CUSTOMERS, batch_size=40)
    queue = new_queue()
    on_workers(site, broker, queue)
    prefork = ("--pool", "prefork", "--concurrency", "2")  # the default pool, two children
    with workers(site.config, tmp_path / "logs", broker, queue, 1, prefork) as running:
        report = celery_run(site)
        assert report["status"] == "succeeded", running.log_text()[-3000:]
        again = celery_run(site)

    assert report["profiles"] == expected["profiles"] > CUSTOMERS
    assert report["destinations"] == expected["destinations"]
    assert report["segments"] == expected["segments"]
    assert report["pulled"] == expected["pulled"]
    assert report["samples"] == expected["samples"]
    assert report["not_synced"] == expected["not_synced"]
    assert site.record_hashes() == one.record_hashes()  # nobody twice, nobody missing
    assert ledger_rows(postgres_url) == ledger_rows(one_url)
    assert again["status"] == "succeeded"
    decisions = again["destinations"]["out"]
    assert decisions.get("create", 0) == decisions.get("update", 0) == 0
    assert decisions["unchanged"] == expected["destinations"]["out"]["create"]


def test_every_task_delivered_twice_changes_nothing_twice(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis, with events: each message is published twice, so that two workers may
    take the same task at once; the twin waits for the first and then does nothing."""
    broker = broker_or_skip("redis")
    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    one = events_site(tmp_path / "one", one_url, 400, event_batch=100, batch_size=30)
    expected = one.run_json()

    sent: list[str] = []
    once = dispatch.publish

    def twice(app: Celery, task: Task, queue: str) -> None:
        sent.append(task.key)
        once(app, task, queue)
        once(app, task, queue)

    site = events_site(tmp_path / "celery", postgres_url, 400, event_batch=100, batch_size=30)
    queue = new_queue()
    on_workers(site, broker, queue)
    monkeypatch.setattr(dispatch, "publish", twice)
    with workers(site.config, tmp_path / "logs", broker, queue) as running:
        report = celery_run(site)
        assert report["status"] == "succeeded", running.log_text()[-3000:]
    assert sum(key.startswith("push/") for key in sent) > 10  # many batches, each sent twice
    # every twin but the last phase's was taken before the run ended, and did nothing
    twins = running.log_text().count("not run again")
    assert twins >= sum(not key.startswith("collect/") for key in sent)

    assert report["destinations"] == expected["destinations"]
    assert report["events"] == expected["events"]
    assert site.record_hashes() == one.record_hashes()
    assert ledger_rows(postgres_url) == ledger_rows(one_url)
    assert by_key(events(site)) == by_key(events(one))
    # each batch file was written once: the outbox lists what each of its sessions wrote
    written = [name for summary in summaries(site) for name in summary["batches"]]
    people = [name for name in written if not name.startswith("events/")]
    assert sorted(people) == sorted(site.batch_files())


def summaries(site: Site) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(site.outbox.glob("summary-*.json"))]
