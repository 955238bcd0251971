"""``crmsync init`` writes a commented configuration and mapping that ``check`` accepts,
for every source and destination kind, and never overwrites a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main

SOURCES = ["files", "rest", "sql"]
DESTINATIONS = ["outbox", "mailchimp", "klaviyo", "hubspot"]
SECRETS = {  # what the written configurations read from the environment
    "MAILCHIMP_API_KEY": "0123456789abcdef0123456789abcdef-us6",
    "KLAVIYO_API_KEY": "pk_0123456789abcdef0123456789abcdef01",
    "HUBSPOT_ACCESS_TOKEN": "pat-eu1-00000000-0000-0000-0000-000000000000",
    "SHOP_API_TOKEN": "token",
    "SHOP_DB_PASSWORD": "secret",
}


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("destination", DESTINATIONS)
@pytest.mark.parametrize("source", SOURCES)
def test_the_written_configuration_passes_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, destination: str
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    code, out = _cli(
        "init", "--source", source, "--destination", destination, "--dir", str(tmp_path)
    )
    assert code == 0, out
    config = tmp_path / "crmsync.toml"
    mapping = tmp_path / "mappings" / f"{destination}.toml"
    assert f"wrote {config}" in out and f"wrote {mapping}" in out
    text = config.read_text(encoding="utf-8")
    assert f'kind = "{source}"' in text and f'kind = "{destination}"' in text
    assert f'mapping = "mappings/{destination}.toml"' in text
    assert "@NAME@" not in text and "@MAPPING@" not in text
    assert sum(line.startswith("#") for line in text.splitlines()) >= 15  # commented
    if source == "files":  # the paths read what `crmsync sample` writes
        assert _cli("sample", "--customers", "30", "--out", str(tmp_path / "data"))[0] == 0
    monkeypatch.chdir(tmp_path)  # relative state path: var/ beside the configuration
    code, out = _cli("check", "--offline", "--config", str(config))
    assert code == 0, out
    assert "configuration" in out and ": ok" in out
    assert "FAIL" not in out


def test_the_mapping_is_the_one_the_kind_ships(tmp_path: Path) -> None:
    from crmsync.registry import default_mapping

    assert _cli("init", "--destination", "mailchimp", "--dir", str(tmp_path))[0] == 0
    written = (tmp_path / "mappings" / "mailchimp.toml").read_text(encoding="utf-8")
    assert written.startswith("# The mapping of destination mailchimp")
    assert written.endswith(default_mapping("mailchimp").read_text("utf-8"))


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    mine = tmp_path / "mappings" / "outbox.toml"
    mine.write_text("# mine\n", encoding="utf-8")
    code, out = _cli("init", "--dir", str(tmp_path))
    assert code == 2
    assert f"not overwriting {mine}" in out
    assert mine.read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "crmsync.toml").exists()  # nothing written at all


def test_an_unknown_kind_names_the_option_and_the_kinds(tmp_path: Path) -> None:
    code, out = _cli("init", "--destination", "fax", "--dir", str(tmp_path))
    assert code == 2
    assert "--destination: unknown kind 'fax'" in out and "mailchimp" in out
    assert os.listdir(tmp_path) == []
