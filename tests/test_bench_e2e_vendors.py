"""The end-to-end bench against the fake Klaviyo and HubSpot (``--destination``), tiny.

Runs ``bench.e2e`` on 300 customers, SQLite, no latency, to each fake served from its
child process, and checks the figures against what happened there: the calls by name add
up to the run's total, the sync calls equal the vendor bench's floor (Klaviyo's 1 % change
imports its three people one by one, which the ratio shows), the runs left every
consented customer subscribed and nothing the vendor refuses, and the keys carry the
destination. The floors and time floors are the vendor benches'; a wrong audience stops
the bench. On one Celery worker (PostgreSQL, Redis) the Klaviyo runs end with the same
audience as in one process, through a budget shared in Redis, with the same calls.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import bench_hubspot, bench_klaviyo
from bench.e2e import vendors
from bench.e2e.cli import parse
from bench.e2e.fake import Audience
from bench.e2e.figures import throughput
from bench.e2e.measure import WrongAtTheFake, bench_one
from bench.e2e.options import RUNS, Options, key_prefix
from bench.e2e.output import table
from bench.e2e.vendors import HubSpot, Klaviyo
from bench.e2e.workers import BROKERS, BUDGET_URL, celery_text
from engine.resolve import load_config

SIZE = 300


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


def _measured(work: Path, destination: str) -> tuple[dict[str, Any], dict[str, Audience]]:
    options = Options(latency=0.0, work=work, destination=destination, settle=False)
    found = bench_one(SIZE, "sqlite", options)
    prefix = f"sqlite.{SIZE}.{destination}."
    assert found.figures and all(key.startswith(prefix) for key in found.figures)
    assert found.contact is None  # the per-contact baseline is Mailchimp's only
    return {k[len(prefix) :]: v for k, v in found.figures.items()}, found.audiences


@pytest.fixture(scope="module")
def klaviyo(work: Path) -> tuple[dict[str, Any], dict[str, Audience]]:
    return _measured(work, "klaviyo")


@pytest.fixture(scope="module")
def hubspot(work: Path) -> tuple[dict[str, Any], dict[str, Audience]]:
    return _measured(work, "hubspot")


def _calls(figures: dict[str, Any], run: str) -> Counter[str]:
    marker = f"{run}.calls."
    return Counter({k[len(marker) :]: v for k, v in figures.items() if k.startswith(marker)})


def _check_runs(figures: dict[str, Any], sync_calls: tuple[str, ...]) -> None:
    """What holds for either vendor: three runs, calls that add up, the changes made."""
    assert [figures[f"{run}.run_id"] for run in RUNS] == [1, 2, 3]
    assert {figures[f"{run}.status"] for run in RUNS} == {"succeeded"}
    for run in RUNS:
        calls = _calls(figures, run)
        assert sum(calls.values()) == figures[f"{run}.calls_total"]
        assert sum(calls[k] for k in sync_calls) == figures[f"{run}.sync_calls"]
        assert figures[f"{run}.rejected_429"] == 0
        assert figures[f"{run}.fake_cpu_s"] >= 0
    assert figures["first.people.create"] > 250
    assert figures["no_change.changes"] == figures["no_change.sync_calls"] == 0
    assert figures["no_change.floor_calls"] == 0
    assert figures["changed.changes"] == figures["changed.people.update"] == SIZE // 100


def test_klaviyo_calls_meet_the_klaviyo_bench_floor(
    klaviyo: tuple[dict[str, Any], dict[str, Audience]],
) -> None:
    figures, audiences = klaviyo
    _check_runs(figures, vendors.KLAVIYO_SYNC)
    first = _calls(figures, "first")
    # one import job for everyone, its people's profiles looked up by address 100 a
    # call (three) and the phone-only people's by number (one), after the consent
    # read-back's one page; a create and an add per list, one subscribe and one
    # unsubscribe job
    assert first["import_job"] == 1 and first["profiles_read"] == 1 + 3 + 1
    lists = len(audiences["first"].tags)
    assert first["list_create"] == first["list_add"] == lists > 5
    assert figures["first.sync_calls"] == figures["first.floor_calls"] == 2 + 1 + 2 * lists
    assert figures["first.ratio_to_floor"] == 1.0
    # three people changed: imported one by one (fewer than ten), where the floor's one
    # job would also take them: two calls above it, in the ratio reported
    changed = _calls(figures, "changed")
    assert changed["profile_import"] == SIZE // 100 and changed["import_job"] == 0
    floor = figures["changed.floor_calls"]
    assert figures["changed.sync_calls"] == floor + SIZE // 100 - 1
    assert figures["changed.ratio_to_floor"] == round(figures["changed.sync_calls"] / floor, 4)
    # far below every endpoint's burst: nothing the limits make wait for
    assert figures["first.time_floor_s"] == 0.0
    assert figures["first.wall_over_time_floor"] == "n/a"
    assert figures["target.klaviyo_calls"] == "met: 1.000 x floor <= 1.1"


def test_klaviyo_holds_every_consented_customer_subscribed_with_their_lists(
    klaviyo: tuple[dict[str, Any], dict[str, Audience]],
) -> None:
    _, audiences = klaviyo
    first, changed = audiences["first"], audiences["changed"]
    subscribed = {k for k, (consent, _) in changed.members.items() if consent == "SUBSCRIBED"}
    assert len(subscribed) > 100
    assert first.tags.keys() == changed.tags.keys()
    assert all(name.startswith("crm-") for name in changed.tags)
    assert audiences["no_change"] == first != changed  # the 1 % change edited people


def test_hubspot_calls_meet_the_hubspot_bench_floor(
    hubspot: tuple[dict[str, Any], dict[str, Audience]],
) -> None:
    figures, audiences = hubspot
    _check_runs(figures, vendors.HUBSPOT_SYNC)
    first = _calls(figures, "first")
    people = len(audiences["first"].members)
    lists = len(audiences["first"].tags)
    # an upsert per 100 contacts, a create and a move per list, the segment options grown
    assert first["upsert"] == -(-people // 100) == 3
    assert first["list_create"] == first["list_move"] == lists > 5
    assert first["property_update"] == 1
    assert figures["first.sync_calls"] == figures["first.floor_calls"] == 3 + 2 * lists + 1
    assert figures["changed.sync_calls"] == figures["changed.floor_calls"] >= 1
    assert figures["changed.ratio_to_floor"] == 1.0
    # the window's time floor of every call of the run: under 100 calls, none
    assert figures["first.calls_total"] < 100 and figures["first.time_floor_s"] == 0.0
    assert figures["target.hubspot_calls"] == "met: 1.000 x floor <= 1.05"


def test_the_floors_are_the_vendor_benches_counted_from_what_changed() -> None:
    people = {f"p{i}@x": ("SUBSCRIBED", "{}") for i in range(2500)}
    before = Audience({}, {"crm-old": frozenset()})
    after = Audience(people, {"crm-old": frozenset(people), "crm-new": frozenset(["p0@x"])})
    klaviyo = Klaviyo(Options())
    klaviyo.host = SimpleNamespace(profile_bytes=lambda labels: 500 * len(labels))
    # one import job, 3 subscribe jobs, a new list, 3 + 1 list calls
    assert klaviyo.floor(before, after) == 1 + 3 + 1 + 3 + 1
    # everyone leaves "crm-old" and one opts out: 3 removal calls and an unsubscribe job
    out = {**people, "p1@x": ("UNSUBSCRIBED", "{}")}
    emptied = {"crm-old": frozenset(), "crm-new": frozenset(["p0@x"])}
    assert klaviyo.floor(after, Audience(out, emptied)) == 3 + 1
    assert klaviyo.floor(after, after) == 0

    hubspot = HubSpot(Options())
    contacts = {f"c{i}@x": ("contact", "{}") for i in range(250)}
    lists = {"crm-a": frozenset(contacts), "crm-b": frozenset(["c0@x"])}
    # 3 upserts, 2 moves, 2 creates, the options grown once
    assert hubspot.floor(Audience({}, {}), Audience(contacts, lists)) == 3 + 2 + 2 + 1
    hubspot._options_before = frozenset({"crm-a", "crm-b"})
    gone = {k: v for k, v in contacts.items() if k != "c0@x"}
    # one contact archived (and out of its lists): an archive call, nothing else changed
    shrunk = {"crm-a": frozenset(gone), "crm-b": frozenset()}
    assert hubspot.floor(Audience(contacts, lists), Audience(gone, shrunk)) == 1


def test_the_time_floors_are_the_vendor_benches() -> None:
    calls = Counter({("POST", "upsert_contacts"): 150, ("PUT", "move_members"): 60})
    # 210 calls: 100 at once, 100 more after 10 s, the last 10 after 20 s
    assert HubSpot(Options()).time_floor(calls) == 20.0
    assert bench_hubspot.rate_limit_seconds(210, 100) == 20.0
    pages = Counter({("GET", "/api/profile-bulk-import-jobs/{job_id}"): 100})
    pages[bench_klaviyo.IMPORT_JOB] = 1
    # the import jobs' group: 10 in any second, 150 in any minute; 101 calls start in
    # eleven seconds of ten, the last at 10 s
    assert Klaviyo(Options()).time_floor(pages) == pytest.approx(10.0)
    # past 150 a minute the minute window rules: call 150 waits for call 0's minute
    assert bench_klaviyo.windowed_seconds(151, 10, 150) == pytest.approx(60.0)


def test_a_consented_customer_missing_or_a_refused_request_is_wrong_at_the_fake() -> None:
    klaviyo = Klaviyo(Options())
    klaviyo.host = SimpleNamespace(problems=lambda: [])
    holds = Audience({"a@x": ("SUBSCRIBED", "{}"), "b@x": ("NEVER_SUBSCRIBED", "{}")}, {})
    assert klaviyo.problems(holds, {"a@x"}) == []
    (problem,) = klaviyo.problems(holds, {"a@x", "b@x", "c@x"})
    assert "2 consented customer(s) missing or not subscribed" in problem
    klaviyo.host = SimpleNamespace(problems=lambda: ["POST /api/x: no such operation"])
    assert klaviyo.problems(holds, set()) == ["POST /api/x: no such operation"]
    hubspot = HubSpot(Options())
    hubspot.host = SimpleNamespace(problems=lambda: [])
    opted = Audience({"a@x": ("opted_out", "{}")}, {})
    assert len(hubspot.problems(opted, {"a@x"})) == 1


def test_the_consented_are_the_opted_in_rows_a_source_keeps(tmp_path: Path) -> None:
    header = "customer_id,email,created_at,updated_at,accepts_email_marketing,"
    header += "email_marketing_updated_at,deleted"
    at = "2026-04-10T08:12:46+03:00"
    rows = [
        f"1,kept@example.com,{at},{at},subscribed,{at},false",
        f",no.id@example.com,{at},{at},subscribed,{at},false",
        f"3,bad.date@example.com,31.02.2026 25:61,{at},subscribed,{at},false",
        f"4,deleted@example.com,{at},{at},subscribed,{at},true",
        f"5,out@example.com,{at},{at},unsubscribed,{at},false",
        f"6,bad@@example.com,{at},{at},subscribed,{at},false",
        # a deleted duplicate with no consent of its own leaves the kept customer's
        f"7,twice@example.com,{at},{at},subscribed,{at},false",
        f"8,twice@example.com,{at},{at},not_subscribed,,true",
    ]
    (tmp_path / "customers.csv").write_text("\n".join([header, *rows]) + "\n", "utf-8")
    told: list[list[str]] = []
    klaviyo = Klaviyo(Options())
    klaviyo.host = SimpleNamespace(expect_consented=told.append)
    assert klaviyo.expect(tmp_path) == {"kept@example.com", "twice@example.com"}
    assert told == [["kept@example.com", "twice@example.com"]]  # the fake's check knows them


def test_the_next_run_waits_for_the_vendor_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(vendors, "_sleep_until", waits.append)
    hubspot, klaviyo = HubSpot(Options()), Klaviyo(Options())
    hubspot._ended, klaviyo._ended = 1000.0, 1000.0
    hubspot.settle()  # HubSpot's window is 10 s: the last run's calls leave it then
    klaviyo.settle()  # Klaviyo's minute windows are fixed: the next one
    assert waits == [1010.5, 1020.2]
    HubSpot(Options(settle=False)).settle()
    assert len(waits) == 2


def test_the_destination_is_an_option_and_keys_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse([])[0].destination == "mailchimp"
    options, _, _ = parse(["--destination", "hubspot", "--engines", "postgresql"])
    assert options.destination == "hubspot"
    with pytest.raises(SystemExit):
        parse(["--destination", "salesforce"])
    assert "invalid choice: 'salesforce'" in capsys.readouterr().err
    # Mailchimp's keys as before; the others' name the destination before the workers
    assert key_prefix("postgresql", 10000) == "postgresql.10000."
    assert key_prefix("postgresql", 10000, 2) == "postgresql.10000.w2."
    assert key_prefix("postgresql", 10000, 0, "klaviyo") == "postgresql.10000.klaviyo."
    assert key_prefix("postgresql", "cdnow", 2, "hubspot") == "postgresql.cdnow.hubspot.w2."

    figures: dict[str, Any] = {
        "postgresql.10000.hubspot.w1.first.wall_s": 40.0,
        "postgresql.10000.hubspot.w2.first.wall_s": 25.0,
        "postgresql.10000.w1.first.wall_s": 1.0,
    }
    throughput(figures, "postgresql", 10000, [0, 1, 2], "hubspot")
    assert figures["postgresql.10000.hubspot.w2.throughput_over_w1"] == 1.6
    rows = table(figures, [("postgresql", 10000, 2)], "hubspot").splitlines()
    assert any(r.startswith("postgresql 10,000 hubspot w2 first") and "25.0" in r for r in rows)


def test_on_workers_the_budget_is_shared_by_the_celery_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.e2e.config import pipeline_text

    hubspot = HubSpot(Options())
    hubspot.base_url = "http://127.0.0.1:1"
    monkeypatch.setenv(hubspot.key_env, "pat-eu1-bench")
    state = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"
    text = pipeline_text(state, tmp_path, hubspot.name, hubspot.table(10))
    path = tmp_path / "crmsync.toml"
    path.write_text(text + celery_text(BROKERS["redis"], "q", 50, shared=""))
    config = load_config(path)
    shared = config.settings.celery.shared_budget
    assert shared is not None and shared.get_secret_value() == BUDGET_URL
    (pipeline,) = config.pipelines.values()
    (destination,) = pipeline.destinations
    assert destination.config.rate_limits.per_ten_seconds == 100
    assert destination.config.lists is True
    assert destination.config.http.rate.shared is None  # the [celery] one covers it


@pytest.mark.slow
@pytest.mark.postgres
def test_klaviyo_on_one_worker_ends_as_in_one_process_with_the_same_calls(
    work: Path, klaviyo: tuple[dict[str, Any], dict[str, Audience]], postgres_url: str
) -> None:
    from tests.celery_workers import broker_or_skip

    broker_or_skip("redis")  # the bench's own database is made beside postgres_url's
    alone, reference = klaviyo
    options = Options(latency=0.0, work=work, destination="klaviyo", settle=False, workers=(1,))
    # the in-process runs (on SQLite) are the reference: a different audience would stop it
    found = bench_one(SIZE, "postgresql", options, workers=1, reference=reference)
    prefix = key_prefix("postgresql", SIZE, 1, "klaviyo")
    figures = {k[len(prefix) :]: v for k, v in found.figures.items()}
    assert figures["people_per_slice"] == 75  # four slices for the one worker
    for run in RUNS:
        assert figures[f"{run}.status"] == "succeeded"
        assert _calls(figures, run) == _calls(alone, run)
        assert figures[f"{run}.floor_calls"] == alone[f"{run}.floor_calls"]
        assert figures[f"{run}.workers_cpu_s"] > 0
    assert figures["first.ratio_to_floor"] == 1.0


def test_a_wrong_audience_at_a_vendor_stops_the_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Klaviyo, "problems", lambda self, audience, consented: ["refused"])
    options = Options(latency=0.0, work=tmp_path, destination="klaviyo", settle=False)
    with pytest.raises(WrongAtTheFake, match="the first run: refused"):
        bench_one(SIZE, "sqlite", options)
