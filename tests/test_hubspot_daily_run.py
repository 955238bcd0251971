"""HubSpot's day runs out in the middle of a run, through the CLI and the fake: the run
stops before the reserve, what it did not send is NOT_SENT (no retry attempt charged,
nobody left in flight), and the run after HubSpot's day starts again sends the rest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

import connectors.http.client as seam
from connectors.http import BudgetRegistry
from state import schema
from state.store import Store
from tests.e2e import Site, make_site, rename_everyone
from tests.fakes.hubspot import DAY, FakeHubSpot
from tests.test_hubspot_pipeline import holds_the_ledger

RESERVE = 5


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[tuple[FakeHubSpot, Clock]]:
    clock = Clock()  # the fake's day and window: HubSpot's day ends when the test says
    found = FakeHubSpot(clock=clock, per_ten_seconds=1_000_000).start()
    try:
        yield found, clock
    finally:
        found.stop()
    assert not found.violations, "\n".join(found.violations[:20])


def point_at(site: Site, fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_HUBSPOT_TOKEN", fake.token)
    site.send_to(
        "hs",
        'kind = "hubspot"\naccess_token = "${CRMSYNC_TEST_HUBSPOT_TOKEN}"\n'
        f'base_url = "{fake.base_url}"\nbatch_size = 10\n'
        f"[destinations.hs.rate_limits]\nper_ten_seconds = 2000\ndaily_reserve = {RESERVE}\n"
        "[destinations.hs.http.rate]\nmax_concurrency = 4\n"
        "[destinations.hs.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets live as long as the process: a run the next day starts a fresh one."""
    monkeypatch.setattr(seam, "BUDGETS", BudgetRegistry())


def failures(site: Site) -> int:
    store = Store(f"sqlite:///{site.root / 'state.db'}")
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(sa.func.count()).select_from(schema.failures)).scalar()
        flying = conn.execute(sa.select(sa.func.count()).select_from(schema.in_flight)).scalar()
    store.close()
    return int(found or 0) + int(flying or 0)


def test_a_run_the_day_cuts_short_goes_on_the_next_day_with_no_attempt_spent(
    tmp_path: Path, fake: tuple[FakeHubSpot, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    hubspot, clock = fake
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=300)
    point_at(site, hubspot, monkeypatch)
    new_process(monkeypatch)
    code, first = site.run_report()
    assert code == 0, first
    synced = holds_the_ledger(site, hubspot, lists=False)

    rename_everyone(site)
    hubspot.daily = hubspot._day_count + 25  # other apps spent the rest of the day
    days = {datetime.now(UTC).date()}
    code, cut = site.run_report()
    days.add(datetime.now(UTC).date())  # the run may cross midnight
    out = cut["destinations"]["hs"]
    changes = out.get("update", 0) + out.get("create", 0)
    assert code == 5 and cut["status"] == "partial", cut  # stopped cleanly: EXIT_PARTIAL
    error = cut["errors"]["hs"]
    assert "daily_reserve" in error
    # and when it can go on: after midnight in the account's time zone (UTC here)
    midnights = {f"{d + timedelta(days=1):%Y-%m-%d} 00:00 UTC" for d in days}
    assert any(f"run after {midnight}" in error for midnight in midnights), error
    assert out["ok"] > 0 and out["not_sent"] > 0 and not out.get("failed"), out
    assert out["ok"] + out["not_sent"] == changes
    assert hubspot._day_count <= hubspot.daily - RESERVE  # the reserve is never spent
    assert hubspot.rate_limited == 0  # HubSpot never had to say 429
    assert failures(site) == 0  # no attempt charged, nobody left in flight

    clock.now += DAY  # HubSpot's day starts again
    new_process(monkeypatch)
    code, rest = site.run_report()
    assert code == 0 and rest["status"] == "succeeded", rest
    assert rest["destinations"]["hs"]["ok"] == out["not_sent"]
    assert failures(site) == 0
    after = holds_the_ledger(site, hubspot, lists=False)
    assert after.keys() == synced.keys()
    renamed = [key for key in after if after[key][1] != synced[key][1]]
    assert len(renamed) == changes  # everyone changed landed, in one run or the other
