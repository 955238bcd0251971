"""A run that finds nothing changed costs next to nothing: it imports no module that only
other commands, other connectors, another database or values it did not read need (start-up
is most of such a run), and it has the database do no upkeep for rows it did not write."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.planner import Planner
from state.store import Store
from tests.e2e import AS_OF, assert_failed_keeping_pushes, break_plan_statistics, make_site

# each costs a run tens of milliseconds to import, for nothing when it reads nothing
NOT_NEEDED = (
    "alembic",  # migrations: the database is at the newest revision
    "apscheduler",  # schedules: `serve`, and validating a configured schedule
    "email_validator",  # e-mail addresses that are not plain: none read
    "rich",  # progress on a terminal
    "httpx",  # HTTP connectors: none configured
    "mailchimp_marketing",
    "sqlalchemy.dialects.postgresql",  # a SQLite state
)

RUN_AND_LIST_MODULES = """
import json, sys
from cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""


def test_a_run_that_reads_nothing_imports_only_what_it_uses(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=30)
    assert site.run_json()["status"] == "succeeded"  # the first run: migrates, reads
    args = ["run", "--config", str(site.config), "--as-of", AS_OF, "--json"]
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    report_text, modules_text = done.stdout.rsplit("\n[", 1)
    report = json.loads(report_text)[0]
    assert report["status"] == "succeeded", report
    assert all(stream["not_read"] for stream in report["pulled"].values()), report["pulled"]
    assert set(report["people"]["out"]) == {"unchanged"}, report["people"]
    modules = set(json.loads("[" + modules_text))
    assert "engine.pipeline" in modules  # the list is of the run's own process
    loaded = [name for name in NOT_NEEDED if name in modules]
    assert loaded == [], loaded


def test_statistics_count_the_rows_a_run_wrote_not_the_people_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL re-analyses the plan tables after a run wrote enough of them; a run that
    kept everyone's plan wrote none, however many people the pipeline has."""
    refreshed: list[tuple[str, int]] = []
    real = Store.refresh_statistics

    def noted(self: Store, written: str, *, changed: int) -> Any:
        refreshed.append((written, changed))
        return real(self, written, changed=changed)

    monkeypatch.setattr(Store, "refresh_statistics", noted)
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=30)
    first = site.run_json()
    assert ("plans", first["profiles"]) in refreshed  # everyone planned and sent
    refreshed.clear()
    again = site.run_json()
    assert again["profiles_kept"] == again["profiles"] > 0
    assert refreshed == [("staging", 0), ("plans", 0)]


def test_a_run_copies_its_sqlite_log_into_the_file_beside_its_final_collect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pages a run wrote are copied from the write-ahead log into the database file on
    the thread beside the run's last vendor calls, not by the close as the process ends."""
    copied: list[tuple[str, tuple[int, int] | None]] = []
    real = Store.checkpoint

    def noted(self: Store) -> Any:
        found = real(self)
        copied.append((threading.current_thread().name, found))
        return found

    monkeypatch.setattr(Store, "checkpoint", noted)
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=30)
    site.run_json()
    assert len(copied) == 1
    thread, pages = copied[0]
    assert thread.startswith("crmsync-statistics")
    assert pages is not None and pages[0] > 0 and pages[1] == pages[0]


def test_a_failure_gathering_the_plans_statistics_beside_the_collect_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan tables' statistics are gathered on a thread beside the run's final collect:
    what that thread raises still ends the run as failed, with its reason."""
    break_plan_statistics(monkeypatch, "ANALYZE was cancelled")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=30)
    result = site.cli("run", "--as-of", AS_OF)
    assert_failed_keeping_pushes(url, result, "ANALYZE was cancelled")


def test_a_run_with_nobody_to_plan_builds_no_planning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing arrived and nobody is due: the run keeps everyone's plan without building
    the planning's queries, which were most of what planning cost such a run; a customer
    renamed afterwards is planned, alone."""
    planned: list[int] = []
    real = Planner.changes

    def counted(self: Planner, *args: Any, **kwargs: Any) -> Any:
        planned.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Planner, "changes", counted)
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=30)
    first = site.run_json()
    assert first["planning"].startswith("everyone"), first["planning"]
    planned.clear()
    again = site.run_json()
    assert again["planning"] == "incremental"
    assert again["profiles_kept"] == again["profiles"] == first["profiles"] > 0
    assert set(again["people"]["out"]) == {"unchanged"}, again["people"]
    assert planned == []

    path = site.data / "customers.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["first_name"] += "x"
    rows[0]["updated_at"] = "2026-10-31T12:00:00+03:00"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    third = site.run_json()
    assert third["planning"] == "incremental"
    assert planned == [1]
    assert third["profiles_kept"] == third["profiles"] - 1
    assert third["people"]["out"]["update"] == 1, third["people"]
