"""The command line as an operator meets it: exit codes, check, fields, sample, backfill."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

from click.testing import CliRunner

from crmsync.cli import main
from tests.e2e import AS_OF, make_site

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_validates_the_example_and_tests_its_connectors(tmp_path: Path) -> None:
    config = tmp_path / "crmsync.toml"
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = text.replace('path = "sample_data/', f'path = "{ROOT}/sample_data/')
    config.write_text(text.replace("var/", f"{tmp_path}/var/"), encoding="utf-8")
    code, out, _ = invoke("check", "--config", str(config))
    assert code == 0, out
    assert "configuration" in out and "state database: ok" in out
    assert "[ok ] demo_store (files)" in out and "[ok ] demo_outbox (outbox)" in out

    broken = text.replace('path = "', 'path = "missing/', 1)
    config.write_text(broken.replace("var/", f"{tmp_path}/var/"), encoding="utf-8")
    code, out, _ = invoke("check", "--config", str(config))
    assert code == 2 and "FAIL" in out and "missing/" in out


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
