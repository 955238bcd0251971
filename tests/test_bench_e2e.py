"""The end-to-end bench at a tiny size: the figures it writes add up.

Runs ``bench.e2e`` on 300 customers, SQLite, no latency, with a fake that logs every
request, and checks the figures against what really happened: the calls counted per run
are the requests the fake saw, the three runs ran, the 1 % edit changed the people it
says it did, and the per-contact replay rebuilt the same audience with two calls a person.
The floor is the Mailchimp bench's, and the first module name still runs the command.
On workers (no worker started here): the options, the configuration's ``[celery]`` table
and shared budget, sqlite refused, and an audience unlike the in-process one failing loudly.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench import bench_e2e, bench_mailchimp, results
from bench.e2e import bytecode
from bench.e2e.cdnow import cdnow_store
from bench.e2e.cli import parse
from bench.e2e.config import KEY_ENV, config_text
from bench.e2e.fake import Audience, call_name, floor_calls
from bench.e2e.figures import throughput
from bench.e2e.measure import AudienceMismatch, _compare, bench_one
from bench.e2e.options import RUNS, Options
from bench.e2e.output import run_of, save, table
from bench.e2e.per_contact import per_contact
from bench.e2e.store import change_one_percent, copy_store, customer_count, store_of
from bench.e2e.workers import BROKERS, BUDGET_URL, celery_text, people_per_slice
from engine.resolve import load_config
from tests.fakes.mailchimp import FakeMailchimp, _route

SIZE = 300


class LoggingFake(FakeMailchimp):
    """The fake, with every request it answers logged as (method, route)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log: list[tuple[str, str]] = []
        self._log_lock = threading.Lock()

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        route, _ = _route(method, urlsplit(target).path)
        with self._log_lock:
            self.log.append((method, route or target))
        return super().handle(method, target, headers, body)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], LoggingFake, Path]:
    work = tmp_path_factory.mktemp("bench")
    fake = LoggingFake(validate=False)
    options = Options(latency=0.0, work=work, per_contact_sizes=frozenset({SIZE}), keep=True)
    figures = bench_one(SIZE, "sqlite", options, fake=fake).figures
    prefix = f"sqlite.{SIZE}."
    assert all(key.startswith(prefix) for key in figures)
    return {k[len(prefix) :]: v for k, v in figures.items()}, fake, work


def test_the_three_runs_ran_one_after_the_other_on_one_state(
    measured: tuple[dict[str, Any], LoggingFake, Path],
) -> None:
    figures, _, _ = measured
    assert [figures[f"{run}.run_id"] for run in RUNS] == [1, 2, 3]
    assert {figures[f"{run}.status"] for run in RUNS} == {"succeeded"}
    assert figures["first.people.create"] > 250
    assert figures["first.received"] > figures["changed.received"] > 0
    assert figures["first.peak_rss_mb"] > 0 and figures["first.cpu_s"] > 0


def test_calls_counted_per_run_are_the_requests_the_fake_saw(
    measured: tuple[dict[str, Any], LoggingFake, Path],
) -> None:
    figures, fake, _ = measured
    counted: Counter[str] = Counter()
    for run in RUNS:
        calls = {k.split(".calls.", 1)[1]: v for k, v in figures.items() if f"{run}.calls." in k}
        assert sum(calls.values()) == figures[f"{run}.calls_total"]
        counted.update(calls)
    assert counted == Counter(call_name(method, route) for method, route in fake.log)
    # 300 people fit one upsert, and every tag is created carrying all its members
    assert figures["first.calls.upsert"] == figures["first.floor_calls"] == 1
    assert figures["first.sync_calls"] == 1 and "first.calls.tag_batch" not in figures


def test_the_second_run_changes_nobody_and_the_third_the_one_percent_edited(
    measured: tuple[dict[str, Any], LoggingFake, Path],
) -> None:
    figures, fake, work = measured
    assert figures["no_change.changes"] == 0
    assert figures["no_change.sync_calls"] == figures["no_change.floor_calls"] == 0
    assert figures["changed_people"] == SIZE // 100
    assert figures["changed.changes"] == figures["changed.people.update"] == SIZE // 100
    assert figures["changed.sync_calls"] == figures["changed.floor_calls"] >= 1

    # the edit, read back from the files: two customers renamed, one new order
    store = next((work / "stores").iterdir())
    data = work / "e2e" / f"sqlite-{SIZE}" / "data"
    before = (store / "customers.csv").read_text(encoding="utf-8").splitlines()
    after = (data / "customers.csv").read_text(encoding="utf-8").splitlines()
    renamed = [new for old, new in zip(before, after, strict=True) if old != new]
    orders = (data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
    added = orders[len((store / "orders.jsonl").read_text(encoding="utf-8").splitlines()) :]
    assert (len(renamed), len(added)) == (2, 1)
    for row in renamed:
        email = row.split(",")[1].strip().lower()
        member = fake.member(email)
        assert member is not None and member["merge_fields"]["LNAME"].endswith("Yeni")
    assert fake.member(json.loads(added[0])["email"]) is not None


def test_the_per_contact_method_rebuilds_the_audience_with_two_calls_a_person(
    measured: tuple[dict[str, Any], LoggingFake, Path],
) -> None:
    figures, _, _ = measured
    assert figures["per_contact.same_audience"] == "yes"
    assert figures["per_contact.people"] == figures["first.people.create"]
    assert figures["per_contact.calls"] == 2 * figures["per_contact.people"]
    assert figures["per_contact.calls_over_crmsync"] > 10


def test_the_per_contact_calls_are_requests_the_mailchimp_spec_allows() -> None:
    source = FakeMailchimp(validate=False)
    source.add_member("ayse@example.com", "subscribed", {"FNAME": "Ayşe"}, tags=["crm-vip"])
    source.add_member("can@example.com", "transactional", {"FNAME": "Can"})
    figures = per_contact(source, Options(latency=0.0), validate=True)
    assert (figures["spec_violations"], figures["same_audience"]) == (0, "yes")
    assert figures["calls"] == 4


def test_the_floor_counts_carried_tag_members_and_pairs_adds_with_removes() -> None:
    people = {f"m{i}": ("subscribed", "{}") for i in range(1200)}
    before = Audience({}, {"old": frozenset(f"m{i}" for i in range(600))})
    after = Audience(
        people,
        {"new": frozenset(f"m{i}" for i in range(1200)), "old": frozenset({"m0"})},
    )
    # 3 upserts; "new" carries 500 of its 1,200 (2 calls for 700); "old" loses 599 (2)
    assert floor_calls(before, after) == 3 + 2 + 2
    assert floor_calls(after, after) == 0


def test_the_mailchimp_bench_floor_is_the_same_floor_counted_push_by_push() -> None:
    def change(add: tuple[str, ...], remove: tuple[str, ...] = ()) -> SimpleNamespace:
        return SimpleNamespace(memberships_add=add, memberships_remove=remove)

    # the audience above as changes: 1,200 people upserted, all into the new tag "new",
    # and 599 of the existing tag "old"'s 600 members taken out of it
    changes = [change(("new",), ("old",) if 0 < i < 600 else ()) for i in range(1200)]
    assert bench_mailchimp.floor(changes, push_batch=10_000, existing={"old"}) == 3 + 2 + 2
    # two pushes of 600 cost two upsert calls each, where one push of 1,200 costs three
    assert bench_mailchimp.floor(changes, push_batch=600, existing={"old"}) == 4 + 2 + 2
    # an archived member costs its own call on top of the same floor
    before = Audience({"a": ("subscribed", "{}")}, {})
    assert floor_calls(before, Audience({"a": ("archived", "{}")}, {})) == 1


def test_results_merge_across_invocations_and_judge_the_rate_at_a_million(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results.json")
    save({"sqlite.10000.first.staging_records_per_s": 60_000})
    save({"sqlite.1000000.first.staging_records_per_s": 45_000})
    entry = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["e2e"]
    assert entry["sqlite.10000.first.staging_records_per_s"] == 60_000
    assert entry["sqlite.target.rate_1m_over_10k"] == "MISSED: 0.75 >= 0.8"


def test_a_run_measured_again_leaves_none_of_its_earlier_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results.json")
    save(
        {
            "postgresql.100000.klaviyo.first.calls.import_job_profiles": 1051,
            "postgresql.100000.klaviyo.first.wall_s": 498.6,
            "postgresql.100000.klaviyo.changed.wall_s": 62.6,
        }
    )
    save({"postgresql.100000.klaviyo.first.wall_s": 107.7})
    entry = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["e2e"]
    assert entry["postgresql.100000.klaviyo.first.wall_s"] == 107.7
    assert "postgresql.100000.klaviyo.first.calls.import_job_profiles" not in entry
    assert entry["postgresql.100000.klaviyo.changed.wall_s"] == 62.6  # not measured again
    assert run_of("sqlite.10000.w2.first.stage_s.pull") == "sqlite.10000.w2.first"
    assert run_of("sqlite.target.rate_1m_over_10k") is None


def test_the_first_module_name_runs_the_same_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench_e2e.main(["--engines", "sqlite,oracle"])
    assert stopped.value.code == 2
    assert "unknown engine(s): oracle" in capsys.readouterr().err


def test_worker_counts_are_measured_in_order_and_sqlite_is_refused_on_workers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options, sizes, engines = parse(["--sizes", "10000", "--engines", "postgresql"])
    assert (options.workers, options.broker, sizes, engines) == (
        (0,),
        "redis",
        [10000],
        ["postgresql"],
    )
    options, _, _ = parse(["--engines", "postgresql", "--workers", "2,0,1", "--broker", "amqp"])
    assert (options.workers, options.broker) == ((0, 1, 2), "amqp")
    assert parse(["--engines", "sqlite", "--workers", "0"])[0].workers == (0,)  # as before

    for argv in (["--engines", "sqlite,postgresql", "--workers", "0,2"], ["--workers", "1,x"]):
        with pytest.raises(SystemExit) as stopped:
            parse(argv)
        assert stopped.value.code == 2
    errors = capsys.readouterr().err
    assert "need PostgreSQL state" in errors and "--engines postgresql" in errors
    assert "--workers takes counts like 0,1,2: '1,x'" in errors


def test_a_configuration_on_workers_shares_the_budget_and_gives_each_worker_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SimpleNamespace(base_url="http://127.0.0.1:1/3.0", list_id="list1")
    monkeypatch.setenv(KEY_ENV, "0123456789abcdef-us7")
    per_slice = people_per_slice(10_000, 4)
    assert 10_000 / per_slice >= 4 * 4  # several slices for each of the most workers
    state = "postgresql+psycopg://postgres@127.0.0.1:5432/bench"
    text = config_text(state, tmp_path, fake, 10)  # a stand-in: the fake's names
    path = tmp_path / "crmsync.toml"
    path.write_text(text + celery_text(BROKERS["redis"], "crmsync-bench-q", per_slice))

    config = load_config(path)
    celery = config.settings.celery
    assert celery.broker_url is not None
    assert celery.broker_url.get_secret_value() == BROKERS["redis"]
    assert (celery.queue, celery.people_per_slice) == ("crmsync-bench-q", per_slice)
    (pipeline,) = config.pipelines.values()
    (destination,) = pipeline.destinations
    assert destination.config.http.rate.shared is not None
    assert destination.config.http.rate.shared.get_secret_value() == BUDGET_URL
    assert BUDGET_URL.rsplit("/", 1)[1] != BROKERS["redis"].rsplit("/", 1)[1]  # apart
    # in one process the configuration is today's: no Celery, no shared budget
    path.write_text(text)
    alone = load_config(path)
    (pipeline,) = alone.pipelines.values()
    assert pipeline.destinations[0].config.http.rate.shared is None


def test_an_audience_unlike_the_reference_stops_the_bench() -> None:
    reference = Audience({"a@x": ("subscribed", "{}")}, {"vip": frozenset({"a@x"})})
    _compare(Audience(dict(reference.members), dict(reference.tags)), reference, "first", 2)
    _compare(reference, None, "first", 2)  # nothing to compare with: the first configuration
    other = Audience({"a@x": ("subscribed", "{}")}, {"vip": frozenset()})
    with pytest.raises(AudienceMismatch, match=r"first run on 2 worker\(s\).*\['vip'\]"):
        _compare(other, reference, "first", 2)


def test_runs_on_workers_are_keyed_apart_and_compared_with_one_worker() -> None:
    figures: dict[str, Any] = {
        "postgresql.10000.first.wall_s": 30.0,
        "postgresql.10000.w1.first.wall_s": 40.0,
        "postgresql.10000.w2.first.wall_s": 25.0,
        "postgresql.10000.w2.first.workers_cpu_s": 12.5,
        "postgresql.10000.w1.first.stage_s.pull": 10.0,
        "postgresql.10000.w2.first.stage_s.pull": 10.0,
        "postgresql.10000.w1.first.stage_s.plan": 8.0,
        "postgresql.10000.w1.first.stage_s.push": 16.0,
        "postgresql.10000.w2.first.stage_s.plan": 4.0,
        "postgresql.10000.w2.first.stage_s.push": 11.0,
    }
    throughput(figures, "postgresql", 10000, [0, 1, 2])
    assert figures["postgresql.10000.w2.throughput_over_w1"] == 1.6
    assert figures["postgresql.10000.w2.throughput_over_w1_pull"] == 1.0
    assert figures["postgresql.10000.w2.throughput_over_w1_plan_push"] == 1.6
    assert "postgresql.10000.w1.throughput_over_w1" not in figures
    rows = table(figures, [("postgresql", 10000, 0), ("postgresql", 10000, 2)]).splitlines()
    (row,) = [r for r in rows if r.startswith("postgresql 10,000 w2 first")]
    assert "25.0" in row and "12.5" in row
    assert "    throughput_over_w1: 1.6" in rows
    assert "    throughput_over_w1_plan_push: 1.6" in rows


def test_sizes_take_the_cdnow_store_beside_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    _, sizes, _ = parse(["--sizes", "10000, cdnow", "--engines", "postgresql"])
    assert sizes == [10000, "cdnow"]
    with pytest.raises(SystemExit) as stopped:
        parse(["--sizes", "10k"])
    assert stopped.value.code == 2
    assert "--sizes takes customer counts or `cdnow`: '10k'" in capsys.readouterr().err
    rows = table({"postgresql.cdnow.w2.first.wall_s": 9.5}, [("postgresql", "cdnow", 2)])
    assert "postgresql cdnow w2 first" in rows and "9.5" in rows


def test_the_one_percent_change_copes_with_cdnow_rows(tmp_path: Path) -> None:
    """CDNOW's customers have no names, no city and no carts: the change still edits one
    person in a hundred, the renamed get a last name and a city, the others an order."""
    dataset = tmp_path / "CDNOW_master.txt"
    lines = [" customer_id  date number_of_cds  dollar_value"]
    lines += [f" {cid:05d} 1997{1 + cid % 12:02d}15  2   23.50" for cid in range(1, 401)]
    dataset.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    store = cdnow_store(tmp_path, dataset)
    assert store_of("cdnow", tmp_path) == store  # written once, found again
    assert customer_count("cdnow", store) == 400 and customer_count(10_000, store) == 10_000
    data = tmp_path / "data"
    copy_store(store, data)

    changed = change_one_percent(data)
    assert len(changed) == 4
    with (data / "customers.csv").open(encoding="utf-8", newline="") as handle:
        rows = {row["email"]: row for row in csv.DictReader(handle)}
    renamed = [rows[email] for email in changed if rows[email]["last_name"]]
    assert len(renamed) == 2
    assert {(r["last_name"], r["city"]) for r in renamed} == {("Yeni", "Ankara")}
    assert all(r["updated_at"] > r["created_at"] for r in renamed)
    orders = (data / "orders.jsonl").read_text(encoding="utf-8").splitlines()[400:]
    assert len(orders) == 2 and {json.loads(o)["email"] for o in orders} < changed
    assert (data / "carts.jsonl").read_text(encoding="utf-8") == ""


def test_the_runs_bytecode_cache_is_filled_as_an_import_would_fill_it(tmp_path: Path) -> None:
    """A fresh cache made the bench's first run compile every module it imported, time
    counted in the first sync; the bench imports every module of the packages first."""
    tree = tmp_path / "src"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "__init__.py").write_text("", "utf-8")
    (tree / "pkg" / "sub" / "__init__.py").write_text("", "utf-8")
    (tree / "pkg" / "sub" / "mod.py").write_text("import colorsys\nVALUE = 1\n", "utf-8")
    (tree / "tool.py").write_text("", "utf-8")
    (tree / "pyproject.toml").write_text(
        '[tool.setuptools]\npy-modules = ["tool"]\n'
        '[tool.setuptools.packages.find]\ninclude = ["pkg*", "absent*"]\n',
        "utf-8",
    )
    (tree / "pkg" / "broken.py").write_text("import not_installed_anywhere\n", "utf-8")
    (tree / "pkg" / "__main__.py").write_text("raise SystemExit('run as a command')\n", "utf-8")
    (tree / "pkg" / "sub" / "exits.py").write_text("raise SystemExit(2)\n", "utf-8")
    cache = tmp_path / "pycache"
    assert bytecode.installed(tree) == ("pkg", "absent", "tool")
    bytecode.import_into(cache, tree, bytecode.installed(tree))
    mirrored = cache / tree.relative_to(tree.anchor)
    tag = sys.implementation.cache_tag
    assert {p.relative_to(mirrored) for p in mirrored.rglob("*.pyc")} == {
        Path(f"pkg/__init__.{tag}.pyc"),
        Path(f"pkg/sub/__init__.{tag}.pyc"),
        Path(f"pkg/sub/mod.{tag}.pyc"),
        Path(f"pkg/broken.{tag}.pyc"),  # compiled, though its import failed
        Path(f"pkg/sub/exits.{tag}.pyc"),  # and the modules after it still imported
        Path(f"tool.{tag}.pyc"),
    }
    import colorsys  # what the modules import is compiled into the cache too

    library = Path(colorsys.__file__)
    assert (cache / library.parent.relative_to(library.anchor) / f"colorsys.{tag}.pyc").is_file()
    # a run with that cache finds every file there and writes none
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pyc")}
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache), "PYTHONPATH": str(tree)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-c", "import pkg.sub.mod"], env=env, check=True)
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.pyc")} == before
