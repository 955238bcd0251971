"""``[celery] shared_budget``: every worker (and the coordinator) draws each vendor
account's budget from one Redis server, so two workers pushing one run to Mailchimp
together never hold more connections than the destination's ``max_connections`` allows
the account (the fake counts the peak), with no destination setting of their own.
Without it, each worker keeps a budget of its own: the same run then meets the fake's
429s and fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.http import BUDGETS
from tests.celery_workers import broker_or_skip, celery_table, new_queue, workers
from tests.e2e import AS_OF, Site, consented, make_site
from tests.fakes.mailchimp import FakeMailchimp
from tests.shared_redis import RedisForTests, shared_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
__all__ = ["shared_redis"]

KEY_VARIABLE = "MC_SHARED_BUDGET_KEY"
CONNECTIONS = 1  # the account's connections: two workers pushing at once would hold two


@pytest.fixture
def local_budgets() -> Iterator[None]:
    """The coordinator runs in the test's process: its budgets are its own again after."""
    yield
    BUDGETS.share(None, key="celery.shared_budget")


def _site(root: Path, url: str, fake: FakeMailchimp) -> Site:
    site = make_site(root, url, customers=300)
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{{KEY_VARIABLE}}}"\n'
        f'list_id = "{fake.list_id}"\nbase_url = "{fake.base_url}"\n'
        f"batch_size = 10\nmax_connections = {CONNECTIONS}\n"
        "[destinations.mc.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )
    fake.expect_consented(consented(site.data))
    return site


def test_two_workers_hold_the_accounts_connections_together(
    tmp_path: Path,
    postgres_url: str,
    shared_redis: RedisForTests,
    monkeypatch: pytest.MonkeyPatch,
    local_budgets: None,
) -> None:
    broker = broker_or_skip("redis")
    fake = FakeMailchimp(max_connections=CONNECTIONS, latency=0.05).start()
    try:
        monkeypatch.setenv(KEY_VARIABLE, fake.api_key)
        site = _site(tmp_path / "w", postgres_url, fake)
        queue = new_queue()
        with open(site.config, "a", encoding="utf-8") as handle:
            handle.write(celery_table(broker, queue, people_per_slice=60))
            handle.write(f'shared_budget = "{shared_redis.url}"\n')
        with workers(site.config, tmp_path / "logs", broker, queue, 2) as running:
            result = site.cli("run", "--workers", "celery", "--as-of", AS_OF, "--json")
            assert result.exit_code == 0, running.log_text()[-3000:]
        pushed = [running.log_of(p.pid).count("push_batch") for p in running.processes]
    finally:
        fake.stop()

    reports: list[dict[str, Any]] = json.loads(result.stdout)
    assert reports[0]["destinations"]["mc"]["ok"] > 250
    # both workers pushed (each logs the push tasks it took), at once ...
    assert all(pushed), pushed
    # ... and never held more than the account's connections between them
    assert fake.max_in_flight == CONNECTIONS
    assert fake.concurrency_rejections == 0
    problems = fake.violations + fake.consent_problems()
    assert not problems, "\n".join(problems[:20])
