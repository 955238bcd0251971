"""The command line as an operator meets it: exit codes, check, fields, sample, backfill."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from connectors.outbox import read_outbox
from tests.e2e import AS_OF, make_site

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def demo_config(tmp_path: Path, data: Path = ROOT / "sample_data") -> tuple[Path, str]:
    """config.example.toml as the README runs it, reading ``data``, writing under tmp."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = text.replace('path = "sample_data/', f'path = "{data}/')
    text = text.replace("var/", f"{tmp_path}/var/")
    config = tmp_path / "crmsync.toml"
    config.write_text(text, encoding="utf-8")
    return config, text


def test_check_validates_the_example_and_tests_its_connectors(tmp_path: Path) -> None:
    config, text = demo_config(tmp_path)
    code, out, _ = invoke("check", "--config", str(config))
    assert code == 0, out
    assert "configuration" in out and "state database: ok" in out
    assert "[ok ] demo_store (files)" in out and "[ok ] demo_outbox (outbox)" in out

    config.write_text(text.replace('path = "', 'path = "missing/', 1), encoding="utf-8")
    code, out, _ = invoke("check", "--config", str(config))
    assert code == 2 and "FAIL" in out and "missing/" in out


def test_the_demo_twice_then_one_changed_order_read_incrementally(tmp_path: Path) -> None:
    """The README's demo pipeline (incremental by updated_at): a second run sends nothing
    and touches no file; an order changed after the last read sends exactly its person."""
    data = tmp_path / "data"
    shutil.copytree(ROOT / "sample_data", data)
    config, _ = demo_config(tmp_path, data)
    as_of = "2026-11-02T00:00:00+00:00"  # the bundled store's clock is 2026-11-01

    def run() -> dict[str, Any]:
        code, out, err = invoke("run", "--config", str(config), "--as-of", as_of, "--json")
        assert code == 0, err
        report: dict[str, Any] = json.loads(out)[0]
        return report["destinations"]["demo_outbox"]

    outbox = tmp_path / "var" / "outbox" / "demo_outbox"
    assert run()["create"] > 2000
    written = {p.name: p.read_bytes() for p in outbox.iterdir()}
    again = run()
    assert again.get("create", 0) == again.get("update", 0) == 0
    assert {p.name: p.read_bytes() for p in outbox.iterdir()} == written

    synced = {r["person_key"]: r for r in read_outbox(outbox)}
    lines = (data / "orders.jsonl").read_text(encoding="utf-8").splitlines()
    index, order = next(  # a counted order of a synced customer
        (i, o)
        for i, o in enumerate(map(json.loads, lines))
        if f"e:{o.get('email')}" in synced and o["status"] in ("paid", "fulfilled")
    )
    key = f"e:{order['email']}"
    spent = synced[key]["fields"]["total_spent"] + 250000 - float(order["total_price"])
    order.update(total_price="250000.00", updated_at="2026-11-01T13:00:00+03:00")
    lines[index] = json.dumps(order, ensure_ascii=False)
    (data / "orders.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = set(written)
    third = run()
    assert third.get("update") == 1 and third.get("create", 0) == 0
    batches = sorted(p for p in outbox.glob("*.jsonl") if p.name not in before)
    [record] = [json.loads(line) for p in batches for line in p.read_text("utf-8").splitlines()]
    assert record["person_key"] == key and record["is_new"] is False
    assert record["fields"]["total_spent"] == pytest.approx(spent)


def test_a_missing_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    code, _, err = invoke("run", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "not found" in err


def test_fields_lists_the_catalogue_with_the_configured_windows() -> None:
    code, out, _ = invoke("fields", "--windows", "7,30")
    assert code == 0
    names = {line.split()[0] for line in out.splitlines()}
    assert {"spent_7d", "orders_30d", "rfm_label", "email_consent"} <= names
    assert "spent_90d" not in names


def test_sample_with_defaults_reproduces_the_bundled_store(tmp_path: Path) -> None:
    code, out, _ = invoke("sample", "--out", str(tmp_path))
    assert code == 0, out
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        assert filecmp.cmp(tmp_path / name, ROOT / "sample_data" / name, shallow=False), name


def test_backfill_repushes_everyone_once_and_then_nothing_is_left(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=120)
    first = site.run_json()
    synced = first["destinations"]["out"]["create"]
    result = site.cli("backfill", "--pipeline", "main", "--full", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert report["kind"] == "backfill"
    assert report["destinations"]["out"]["update"] == synced
    again = site.run_json()  # a normal run after the backfill: nothing left to do
    assert again["destinations"]["out"].get("update", 0) == 0

    usage = site.cli("backfill", "--pipeline", "main")
    assert usage.exit_code == 2 and "--since" in usage.output


def test_plan_text_output_names_each_destination_and_samples(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=50)
    result = site.cli("plan", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert "-> out (outbox):" in result.stdout and "create" in result.stdout
    assert "profiles:" in result.stdout


def test_migrate_brings_a_new_database_to_the_newest_schema_once(tmp_path: Path) -> None:
    from state.migrate import head_revision

    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=10)
    first = site.cli("migrate")
    assert first.exit_code == 0, first.output
    assert f"at revision {head_revision()} (was empty)" in first.stdout
    again = site.cli("migrate")
    assert f"at revision {head_revision()} (was {head_revision()})" in again.stdout


def test_a_pipeline_running_elsewhere_makes_a_run_exit_4_without_touching_it(
    tmp_path: Path,
) -> None:
    from state.store import Store

    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=10)
    store = Store(url)
    assert store.acquire_lease("pipeline:main", 600, holder="another-host:123") is not None
    store.close()
    result = site.cli("run", "--as-of", AS_OF)
    assert result.exit_code == 4 and "already running" in result.stderr
    assert site.batch_files() == set()
