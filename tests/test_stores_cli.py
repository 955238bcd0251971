"""Every command on a directory of store files: the stores share one state database
without mixing, ``--store`` (or ``--pipeline STORE.PIPELINE``) picks one, and a broken
store is reported while the others run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cli import main
from tests.e2e import AS_OF
from tests.stores_dir import StoresDir, make_stores_dir, names_in


def invoke(site: StoresDir, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(site.directory)])
    return result.exit_code, result.stdout, result.stderr


def run(site: StoresDir, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    code, out, err = invoke(site, "run", "--as-of", AS_OF, "--json", *extra)
    return code, json.loads(out) if out.strip() else [], err


def creates(report: dict[str, Any]) -> int:
    (people,) = report["people"].values()
    return int(people.get("create", 0))


def test_two_stores_with_the_same_names_sync_into_one_state_database_without_mixing(
    tmp_path: Path, state_url: str
) -> None:
    """Both stores call their source ``shop``, their destination ``out`` and their pipeline
    ``main``. acme and globex read the same export (the same people): unqualified, the
    second would find everyone already in the ledger and send nothing; initech reads other
    people, who must reach only initech's destination."""
    site = make_stores_dir(tmp_path, state_url)
    site.add("acme", customers=20, seed=1)
    (site.data / "globex").symlink_to(site.data / "acme")
    site.add("globex")
    site.add("initech", customers=15, seed=2)

    code, reports, err = run(site)
    assert code == 0, err
    assert [r["pipeline"] for r in reports] == ["acme.main", "globex.main", "initech.main"]
    by_store = {r["pipeline"].split(".")[0]: r for r in reports}
    assert creates(by_store["acme"]) == creates(by_store["globex"]) == len(site.sent("acme"))
    assert site.sent("acme") == site.sent("globex") >= site.emails("acme")
    assert site.sent("initech") >= site.emails("initech")
    assert site.sent("initech").isdisjoint(site.sent("acme"))

    assert names_in(state_url, "customers", "source") == {
        "acme.shop",
        "globex.shop",
        "initech.shop",
    }
    assert names_in(state_url, "cursors", "connector") >= {
        "acme.shop",
        "globex.shop",
        "initech.shop",
    }
    assert names_in(state_url, "ledger", "destination") == {"acme.out", "globex.out", "initech.out"}
    assert names_in(state_url, "runs", "pipeline") == {"acme.main", "globex.main", "initech.main"}

    code, again, err = run(site)
    assert code == 0, err
    assert len(again) == 3
    for report in again:
        (people,) = report["people"].values()
        assert set(people) == {"unchanged"}, report

    code, out, _ = invoke(site, "status", "--store", "globex", "--json")
    assert code == 0 and [d["pipeline"] for d in json.loads(out)] == ["globex.main"]


def test_store_or_a_qualified_pipeline_picks_one_store(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", seed=1)
    site.add("globex", seed=2)

    code, reports, err = run(site, "--store", "globex")
    assert code == 0, err
    assert [r["pipeline"] for r in reports] == ["globex.main"]
    assert not (site.outbox / "acme.out").exists()

    code, reports, err = run(site, "--pipeline", "acme.main")
    assert code == 0, err
    assert [r["pipeline"] for r in reports] == ["acme.main"]

    code, reports, err = run(site, "--store", "acme", "--pipeline", "main")
    assert code == 0 and [r["pipeline"] for r in reports] == ["acme.main"], err

    code, out, _ = invoke(site, "plan", "--pipeline", "main", "--no-pull", "--json")
    assert code == 0 and [r["pipeline"] for r in json.loads(out)] == ["acme.main", "globex.main"]

    code, out, _ = invoke(site, "status")
    assert code == 0 and "acme.main" in out and "globex.main" in out

    code, _, err = invoke(site, "run", "--store", "hooli")
    assert code == 2 and "no store 'hooli'" in err and "acme, globex" in err

    code, _, err = invoke(site, "run", "--pipeline", "other")
    assert code == 2 and "no store has a pipeline named 'other'" in err

    code, _, err = invoke(site, "consent", "--pipeline", "main")
    assert code == 2 and "2 stores have a pipeline 'main'" in err


def test_backfill_and_report_take_a_store(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", seed=1)
    site.add("globex", seed=2)
    assert run(site)[0] == 0

    code, out, err = invoke(
        site, "backfill", "--store", "acme", "--pipeline", "main", "--full", "--json"
    )
    assert code == 0, err
    (report,) = json.loads(out)
    assert report["pipeline"] == "acme.main" and report["kind"] == "backfill"

    code, out, err = invoke(site, "report", "--store", "globex", "--json")
    assert code == 0, err
    assert [r["pipeline"] for r in json.loads(out)] == ["globex.main"]


def test_check_reports_each_broken_store_with_its_file_and_checks_the_others(
    tmp_path: Path,
) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", seed=1)
    site.add("globex", seed=2, extra="max_attempts = 0\n")
    site.file("initech").write_text("[sources\n", "utf-8")

    code, out, err = invoke(site, "check", "--offline")
    assert code == 2
    assert f"configuration store acme ({site.file('acme')}): ok" in out
    assert "state database: ok" in out and "sample of acme.shop (files) customers" in out
    assert "store globex: configuration error (1 issue(s))" in err
    assert "pipelines.main.max_attempts (globex.toml:" in err
    assert "store initech: configuration error" in err and "initech.toml is not valid TOML" in err
    assert "2 store(s) with configuration errors" in err

    code, out, err = invoke(site, "check", "--offline", "--store", "acme")
    assert code == 0, err

    code, out, err = invoke(site, "check", "--offline", "--store", "globex")
    assert code == 2 and "max_attempts" in err and "acme" not in out


def test_a_run_of_every_store_runs_the_good_ones_and_exits_2_for_a_broken_one(
    tmp_path: Path,
) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", seed=1)
    site.add("globex", seed=2, extra="sources = []\n")
    code, reports, err = run(site)
    assert code == 2
    assert [r["pipeline"] for r in reports] == ["acme.main"] and creates(reports[0]) > 0
    assert "store globex: configuration error" in err and "1 store(s) not run" in err


def test_store_with_a_single_configuration_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "crmsync.toml"
    config.write_text("", "utf-8")
    result = CliRunner().invoke(main, ["status", "--config", str(config), "--store", "acme"])
    assert result.exit_code == 2 and "not a directory of stores" in result.stderr


def test_migrate_on_a_directory_migrates_the_shared_database_once(tmp_path: Path) -> None:
    site = make_stores_dir(tmp_path, "sqlite:///state.db")
    site.add("acme", seed=1)
    site.add("globex", seed=2)
    code, out, err = invoke(site, "migrate")
    assert code == 0, err
    assert out.count("state database at revision") == 1 and "(was empty)" in out
