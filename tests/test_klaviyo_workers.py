"""Klaviyo on Celery workers: a run whose push, import jobs and collect are tasks on two
workers (real RabbitMQ, PostgreSQL state) leaves the fake Klaviyo exactly as the run in
one process leaves another: the same profiles with the same fields and consent, the same
list memberships, the same ledger and report; a further run writes nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from connectors.klaviyo.destination import KlaviyoDestination
from crmsync.contract import Change
from distributed.dispatch import Dispatch, Task
from engine import push as push_module
from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, consented, ledger_rows, make_site
from tests.fakes.klaviyo import FakeKlaviyo

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _klaviyo(site: Site, fake: FakeKlaviyo, variable: str, per_job: int | None) -> None:
    jobs = f"[destinations.kl.jobs]\nprofiles_per_job = {per_job}\n" if per_job else ""
    site.send_to(
        "kl",
        f'kind = "klaviyo"\napi_key = "${{{variable}}}"\nbase_url = "{fake.base_url}"\n'
        "[destinations.kl.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n" + jobs,
    )
    fake.expect_consented(consented(site.data))


def _holds(fake: FakeKlaviyo) -> dict[str, Any]:
    """Per profile (by its label): fields, location, consent on both channels, lists."""
    return {
        p.label: (
            p.email,
            p.phone_number,
            p.external_id,
            p.first_name,
            p.last_name,
            sorted(p.location.items()),
            sorted((k, repr(v)) for k, v in p.properties.items()),
            p.channel("email").consent,
            p.channel("sms").consent,
            sorted(x.name for x in fake.lists.values() if p.id in x.members),
        )
        for p in fake.profiles.values()
    }


def test_a_run_to_klaviyo_on_workers_ends_like_the_run_in_one_process(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ends_like_one_process(tmp_path, postgres_url, monkeypatch)


def test_jobs_the_coordinator_settles_while_the_workers_push_end_the_same(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator settles the workers' finished jobs while they push, as a run in
    one process settles its own. Here the push phase is held open until it has settled
    one (a run does not wait for that), so that the run surely ends with jobs settled
    there; with 50 profiles a job, the run has several. The state, the ledger and the
    list calls are still those of one process: the list moves of the jobs settled here
    are gathered with the workers' into full calls, not sent job by job."""
    monkeypatch.setattr(push_module, "_COLLECT_EVERY", 0.05)
    settled = threading.Event()
    collect_early = KlaviyoDestination.collect_early

    def early(self: KlaviyoDestination, job: str, changes: Sequence[Change]) -> Any:
        results = collect_early(self, job, changes)
        if results is not None:
            settled.set()
        return results

    run = Dispatch.run

    def held_open(self: Dispatch, phase: str, batch: Sequence[Task], **kw: Any) -> Any:
        rows = run(self, phase, batch, **kw)
        if phase == "push":
            assert settled.wait(30), "the coordinator settled no job while the workers pushed"
        return rows

    # in this process, the coordinator's: the workers run in processes of their own
    monkeypatch.setattr(KlaviyoDestination, "collect_early", early)
    monkeypatch.setattr(Dispatch, "run", held_open)
    _ends_like_one_process(tmp_path, postgres_url, monkeypatch, per_job=50)
    assert settled.is_set()


def _ends_like_one_process(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch, per_job: int | None = None
) -> None:
    broker = broker_or_skip("amqp")
    alone, spread = FakeKlaviyo().start(), FakeKlaviyo().start()
    try:
        monkeypatch.setenv("KL_ONE", alone.api_key)
        monkeypatch.setenv("KL_WORKERS", spread.api_key)
        one_url = f"sqlite:///{tmp_path / 'one.db'}"
        one = make_site(tmp_path / "one", one_url, customers=200, dirty_rate=0.05, batch_size=40)
        _klaviyo(one, alone, "KL_ONE", per_job)
        expected = one.run_json()

        site = make_site(
            tmp_path / "w", postgres_url, customers=200, dirty_rate=0.05, batch_size=40
        )
        _klaviyo(site, spread, "KL_WORKERS", per_job)
        queue = new_queue()
        with open(site.config, "a", encoding="utf-8") as handle:
            handle.write(celery_table(broker, queue, people_per_slice=60))
        with workers(site.config, tmp_path / "logs", broker, queue, 2) as running:
            result = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
            assert result.exit_code in (0, 5), running.log_text()[-3000:]
            moved = _list_calls(spread)
            spread.reset_counters()
            again = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
            assert again.exit_code in (0, 5), running.log_text()[-3000:]
        assert spread.writes() == 0  # the second run found nothing to write

        report = _report(result.stdout)
        # every count but "pending": how often people waited on a job depends on which
        # process collects it (one that holds the run's list moves, or another)
        assert _final(report) == _final(expected)
        assert expected["destinations"]["kl"].get("ok", 0) > 150
        assert report["segments"] == expected["segments"]
        assert _holds(spread) == _holds(alone) != {}
        # list moves wait for the import jobs, settled by the collect: one process's calls
        assert moved == _list_calls(alone) > 0
        assert ledger_rows(postgres_url) == ledger_rows(one_url)
    finally:
        alone.stop()
        spread.stop()
    for fake in (alone, spread):
        problems = fake.violations + fake.consent_problems()
        assert not problems, "\n".join(problems[:20])


def _list_calls(fake: FakeKlaviyo) -> int:
    """Calls that move profiles into and out of lists."""
    path = "/api/lists/{id}/relationships/profiles"
    return fake.calls[("POST", path)] + fake.calls[("DELETE", path)]


def _final(report: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in report["destinations"]["kl"].items() if k != "pending"}


def _report(stdout: str) -> dict[str, Any]:
    reports: list[dict[str, Any]] = json.loads(stdout)
    return reports[0]
