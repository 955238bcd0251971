"""The whole flow into Klaviyo through the CLI: files -> profiles -> the fake Klaviyo.

The core pushes, keeps the import jobs in flight, collects them at the end of the run and
acknowledges only then; the fake checks every request against Klaviyo's specs and, on
teardown, that nobody ended subscribed without consent or after opting out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.klaviyo.payloads import (
    LOCATION,
    STANDARD_ATTRIBUTES,
    cleared,
    job_bytes_available,
    size_of,
)
from state import schema
from state.store import Store
from tests.e2e import AS_OF, Site, consented, edit_order, make_site
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake

__all__ = ["klaviyo_fake"]


@pytest.fixture
def site(tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch) -> Site:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=150, dirty_rate=0.05)
    _point_at(site, klaviyo_fake, monkeypatch)
    klaviyo_fake.expect_consented(consented(site.data))
    return site


def _point_at(site: Site, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_KLAVIYO_KEY", klaviyo_fake.api_key)
    site.send_to(
        "kl",
        'kind = "klaviyo"\napi_key = "${CRMSYNC_TEST_KLAVIYO_KEY}"\n'
        f'base_url = "{klaviyo_fake.base_url}"\n'
        "[destinations.kl.http.retry]\nbackoff_initial = 0.01\nbackoff_max = 0.05\n",
    )


def ledger(site: Site) -> dict[str, tuple[str, set[str]]]:
    store = Store(f"sqlite:///{site.root / 'state.db'}")
    t = schema.ledger
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.person_key, t.c.remote_id, t.c.memberships).where(t.c.destination == "kl")
        )
        out = {key: (remote, set(filter(None, lists.split("\n")))) for key, remote, lists in rows}
    store.close()
    return out


def test_a_first_run_lands_everyone_then_a_second_run_writes_nothing(
    site: Site, klaviyo_fake: FakeKlaviyo
) -> None:
    first = site.run_json()
    counts = first["destinations"]["kl"]
    assert counts.get("failed", 0) == 0 and counts.get("pending", 0) > 100, counts
    acked = ledger(site)
    assert len(acked) == len(klaviyo_fake.profiles) > 100
    by_id = {p.id: p for p in klaviyo_fake.profiles.values()}
    for key, (remote, lists) in acked.items():
        profile = by_id[remote]
        assert key in (f"e:{profile.email}", f"p:{profile.phone_number}")
        assert {x.name for x in klaviyo_fake.lists.values() if remote in x.members} == lists
    subscribed = {e for e, s in klaviyo_fake.subscriptions().items() if s == "SUBSCRIBED"}
    assert subscribed and subscribed <= consented(site.data)

    klaviyo_fake.reset_counters()
    site.run_json()
    assert klaviyo_fake.writes() == 0


def test_an_unsubscribe_in_klaviyo_is_read_back_and_wins(
    site: Site, klaviyo_fake: FakeKlaviyo
) -> None:
    site.run_json()
    subscribed = sorted(e for e, s in klaviyo_fake.subscriptions().items() if s == "SUBSCRIBED")
    person = subscribed[0]
    klaviyo_fake.unsubscribe(person, at=datetime.now(UTC))
    second = site.run_json()
    assert second["consent_read"]["kl"] == 1
    klaviyo_fake.reset_counters()
    site.run_json()
    assert klaviyo_fake.subscriptions()[person] == "UNSUBSCRIBED"
    assert klaviyo_fake.writes() == 0


def test_a_run_cut_by_bytes_opens_the_jobs_of_one_stream_and_lands_everyone(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of 24 KB and pushes of 50: every push is cut by bytes, its last job held for the
    next push and the run's last one sent when the run collects it. The run opens the jobs
    of one ordered cut of all its profiles (per push it opened more), and ends with
    everyone acknowledged in one run: held people are handed on to the job that took them."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=150)
    monkeypatch.setenv("CRMSYNC_TEST_KLAVIYO_KEY", klaviyo_fake.api_key)
    site.send_to(
        "kl",
        'kind = "klaviyo"\napi_key = "${CRMSYNC_TEST_KLAVIYO_KEY}"\n'
        f'base_url = "{klaviyo_fake.base_url}"\n'
        "[destinations.kl.jobs]\nprofiles_per_job = 50\nbytes_per_job = 24576\n",
    )
    klaviyo_fake.rate_limits_enabled = False  # many small jobs; the limits are tested apart
    klaviyo_fake.expect_consented(consented(site.data))
    counts = site.run_json()["destinations"]["kl"]
    assert counts.get("failed", 0) == 0 and counts.get("pending", 0) > 100, counts
    assert len(ledger(site)) == len(klaviyo_fake.profiles) > 100  # all acknowledged
    jobs = list(klaviyo_fake.jobs.values())
    stream = [entry for job in jobs for entry in job.entries]
    sizes = [size_of(entry) for entry in stream]
    assert len({e["attributes"].get("email") or id(e) for e in stream}) == len(stream)
    one_cut = _ordered_cut(sizes, 50, job_bytes_available(24576))
    assert len([j for j in jobs if j.entries]) == one_cut


def _ordered_cut(sizes: list[int], count: int, max_bytes: int) -> int:
    """Jobs in an ordered cut of profiles of these sizes, each as full as both caps allow."""
    jobs, held, used = 0, 0, 0
    for size in sizes:
        if held and (held == count or used + size > max_bytes):
            jobs, held, used = jobs + 1, 0, 0
        held, used = held + 1, used + size
    return jobs + (1 if held else 0)


AT = ("--as-of", AS_OF)
AFTER_SUBMIT = {"CRMSYNC_TEST_KILL_WHEN": "after_submit"}


def _field_at(profile: Any, name: str) -> Any:
    """Where the Klaviyo payload builder puts a mapped field, read back from the fake."""
    if name in STANDARD_ATTRIBUTES:
        return getattr(profile, name)
    if name.startswith(LOCATION):
        return profile.location.get(name[len(LOCATION) :])
    return profile.properties.get(name)


@pytest.mark.slow
def test_twenty_thousand_customers_killed_between_submit_and_collect_end_as_the_ledger_says(
    tmp_path: Path, klaviyo_fake: FakeKlaviyo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20,000-customer first sync is SIGKILLed right after its first import job was
    submitted and recorded as pending; the re-run collects that job, sends the rest, and
    the fake then holds exactly the ledger's profiles, properties, lists and subscriptions,
    with nobody doubled. A second run writes nothing; one changed order sends one person."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20_000)
    _point_at(site, klaviyo_fake, monkeypatch)
    klaviyo_fake.rate_limits_enabled = False  # the limits have tests of their own; this is bulk
    klaviyo_fake.expect_consented(consented(site.data))
    killed = subprocess.run(
        [sys.executable, "-m", "tests.kill_in_push", "run", "--config", str(site.config), *AT],
        env={**os.environ, "CRMSYNC_TEST_KILL_MARKER": "crm-new", **AFTER_SUBMIT},
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert ledger(site) == {} and len(klaviyo_fake.jobs) >= 1  # submitted, never collected

    first = site.run_json()
    counts = first["destinations"]["kl"]
    assert counts.get("failed", 0) == 0 and counts["ok"] > 19_000, counts

    store = Store(f"sqlite:///{site.root / 'state.db'}")
    t = schema.ledger
    with store.engine.connect() as conn:
        acked = {
            key: (remote, json.loads(payload), set(filter(None, lists.split("\n"))))
            for key, remote, payload, lists in conn.execute(
                sa.select(t.c.person_key, t.c.remote_id, t.c.payload, t.c.memberships).where(
                    t.c.destination == "kl", t.c.status == "synced"
                )
            )
        }
    store.close()
    profiles = {p.id: p for p in klaviyo_fake.profiles.values()}
    assert sorted(remote for remote, _, _ in acked.values()) == sorted(profiles)  # nobody twice
    members: dict[str, set[str]] = {}
    for found in klaviyo_fake.lists.values():
        for pid in found.members:
            members.setdefault(pid, set()).add(found.name)
    for key, (remote, payload, lists) in acked.items():
        profile = profiles[remote]
        assert key in (f"e:{profile.email}", f"p:{profile.phone_number}")
        assert members.get(remote, set()) == lists, key
        for name, value in payload.items():
            assert _field_at(profile, name) == cleared(value), (key, name)
    subscribed = {e for e, s in klaviyo_fake.subscriptions().items() if s == "SUBSCRIBED"}
    # everyone is new to Klaviyo here: exactly the synced people with a recorded opt-in
    synced = {key[2:] for key in acked if key.startswith("e:")}
    assert subscribed == consented(site.data) & synced

    klaviyo_fake.reset_counters()
    site.run_json()
    assert klaviyo_fake.writes() == 0

    person = next(key for key in sorted(acked) if key.startswith("e:"))
    order = next(
        json.loads(line)
        for line in (site.data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
        if line and json.loads(line).get("email") == person[2:]
    )
    edit_order(site.data / "orders.jsonl", order["id"], total_price="25000.00")
    third = site.run_json()["destinations"]["kl"]
    assert third.get("update") == 1 and third.get("create", 0) == 0, third


def test_a_run_waits_for_its_import_jobs_as_long_as_it_is_told(
    site: Site, klaviyo_fake: FakeKlaviyo
) -> None:
    """`--job-wait`: a run told not to wait leaves its jobs running, says so with the wait
    it had, and acknowledges nobody they hold; the next run, told to wait long enough,
    settles them and lands everyone."""
    klaviyo_fake.job_polls_until_complete = None
    # each job takes this long at the fake: longer than the first run's pushes, so that
    # no pass of its own while it pushes (every 2 s) finds one done
    klaviyo_fake.job_seconds_until_complete = 5.0

    first = site.run_json("--job-wait", "0")
    left = [w for w in first["warnings"] if "jobs still running" in w]
    assert len(left) == 1 and "after a wait of 0 s" in left[0]
    assert first["destinations"]["kl"].get("pending", 0) > 100
    assert ledger(site) == {}  # nobody acknowledged while their job runs

    second = site.run_json("--job-wait", "60")
    assert not [w for w in second["warnings"] if "jobs still running" in w]
    acked = ledger(site)
    assert len(acked) == len(klaviyo_fake.profiles) > 100
    assert {remote for remote, _ in acked.values()} == set(klaviyo_fake.profiles)
