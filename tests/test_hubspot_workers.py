"""HubSpot on Celery workers: two workers drawing on the account's budget in Redis leave
the fake HubSpot exactly as the run in one process leaves another: the same contacts and
properties, the same list memberships, ledger and report, with HubSpot prepared once for
the run (its segment options added once, before the pushes). (That processes sharing the
budget stay inside the 10-second window together, and exceed it without: the shared
budget's own tests, tests/test_shared_budget_processes.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, ledger_rows, make_site
from tests.fakes.hubspot import FakeHubSpot
from tests.shared_redis import RedisForTests, shared_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
__all__ = ["shared_redis"]

WINDOW = 2_000  # requests per 10 s, in the fake and the configuration: never the pace here


def _hubspot(site: Site, fake: FakeHubSpot, variable: str, shared: str = "") -> None:
    fake.per_ten_seconds = WINDOW
    rate = f'[destinations.hs.http.rate]\nshared = "{shared}"\n' if shared else ""
    site.send_to(
        "hs",
        f'kind = "hubspot"\naccess_token = "${{{variable}}}"\n'
        f'base_url = "{fake.base_url}"\nlists = true\n'
        # list calls of 7 people: a remainder in each push, unless the workers hold
        # the moves together
        "batch_size = 20\nlist_batch = 7\n"
        f"[destinations.hs.rate_limits]\nper_ten_seconds = {WINDOW}\n"
        "[destinations.hs.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n" + rate,
    )


def _holds(fake: FakeHubSpot) -> dict[str, Any]:
    """Per contact (by e-mail): its properties and the names of its lists."""
    lists = fake.memberships()
    return {
        email: (sorted(c.properties.items()), sorted(lists.get(c.id, set())))
        for email, c in fake.contacts().items()
    }


def test_a_run_to_hubspot_on_two_workers_ends_like_the_run_in_one_process(
    tmp_path: Path,
    postgres_url: str,
    shared_redis: RedisForTests,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = broker_or_skip("redis")
    alone, spread = FakeHubSpot().start(), FakeHubSpot().start()
    try:
        monkeypatch.setenv("HS_ONE", alone.token)
        monkeypatch.setenv("HS_WORKERS", spread.token)
        one_url = f"sqlite:///{tmp_path / 'one.db'}"
        one = make_site(tmp_path / "one", one_url, customers=200, batch_size=25)
        _hubspot(one, alone, "HS_ONE")
        expected = one.run_json()

        site = make_site(tmp_path / "w", postgres_url, customers=200, batch_size=25)
        _hubspot(site, spread, "HS_WORKERS", shared=shared_redis.url)
        queue = new_queue()
        with open(site.config, "a", encoding="utf-8") as handle:
            handle.write(celery_table(broker, queue, people_per_slice=30))
        with workers(site.config, tmp_path / "logs", broker, queue, 2) as running:
            result = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
            assert result.exit_code in (0, 5), running.log_text()[-3000:]
        log = running.log_text()
    finally:
        alone.stop()
        spread.stop()

    assert "crmsync.push" in log
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    # every count but "pending": how often people waited for the run's list job depends
    # on the order the workers pushed in
    assert _final(reports[0]) == _final(expected)
    assert _holds(spread) == _holds(alone) != {}
    # the workers held the run's list moves together: the calls of one process
    moves = ("PUT", "move_members")
    assert spread.calls[moves] == alone.calls[moves] > 0
    assert ledger_rows(postgres_url) == ledger_rows(one_url)
    for fake in (alone, spread):
        assert not fake.consent_problems()
        assert fake.violations == []  # no update dropped an option, among others
    # HubSpot was prepared once for the run: the workers took over what the prepare
    # task found (its properties listed once, as in one process), and the coordinator
    # added the run's segment options before any push, in one read and one update
    # (one process adds them as its pushes meet them: once or more); no worker read or
    # wrote them, so none could drop another's
    listed = ("GET", "list_properties")
    assert spread.calls[listed] == alone.calls[listed] == 1
    assert spread.calls[("GET", "get_property")] == 1
    assert spread.calls[("PATCH", "update_property")] == 1
    assert alone.calls[("PATCH", "update_property")] >= 1
    segments = "crmsync_segments"
    assert set(spread.properties[segments].values()) == set(alone.properties[segments].values())


def _final(report: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in report["destinations"]["hs"].items() if k != "pending"}
