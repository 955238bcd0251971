"""Configuration: every error at once, each with its key and a hint; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from crmsync.errors import ConfigError
from engine.resolve import load_config

ROOT = Path(__file__).resolve().parent.parent

BROKEN = """
[state]
url = "sqlite:///state.db"
colour = "blue"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "customers.csv"

[sources.api]
kind = "nosuchkind"

[destinations.out]
kind = "outbox"
directroy = "x"

[destinations.mc]
kind = "mailchimp"
api_key = "${CRMSYNC_TEST_UNSET_KEY}"
list_id = "abc123"

[segments.big]
rule = "spent_30d > 500 and contry == 'TR'"

[pipelines.main]
sources = ["shop", "missing"]
destinations = ["out"]
schedule = "every tuesday"
"""


def issues_of(text: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "crmsync.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return {issue.key: f"{issue.message} | {issue.hint}" for issue in caught.value.issues}


def test_every_problem_is_reported_at_once_with_its_key(tmp_path: Path) -> None:
    found = issues_of(BROKEN, tmp_path)
    assert "state.colour" in found
    assert "unknown kind 'nosuchkind'" in found["sources.api.kind"]
    assert "destinations.out.directroy" in found
    assert "CRMSYNC_TEST_UNSET_KEY" in found["destinations.mc.api_key"]
    assert "no source named 'missing'" in found["pipelines.main.sources"]
    assert "cron" in found["pipelines.main.schedule"]


def test_rule_errors_are_checked_only_when_the_rest_of_the_core_model_is_valid(
    tmp_path: Path,
) -> None:
    text = BROKEN.replace('colour = "blue"\n', "")
    found = issues_of(text, tmp_path)
    rule = found["segments.big.rule"]
    assert "contry" in rule and "country" in rule  # the unknown name and a suggestion


def test_check_exits_2_and_lists_every_issue(tmp_path: Path) -> None:
    path = tmp_path / "crmsync.toml"
    path.write_text(BROKEN.replace('colour = "blue"\n', ""), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--offline", "--config", str(path)])
    assert result.exit_code == 2
    for key in (
        "sources.api.kind",
        "destinations.out.directroy",
        "pipelines.main.sources",
        "segments.big.rule",
        "destinations.mc.api_key",
    ):
        assert key in result.output


def test_secrets_come_from_the_environment_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_MC_KEY", "0123456789abcdef0123456789abcdef-us21")
    path = tmp_path / "crmsync.toml"
    path.write_text(
        """
[destinations.mc]
kind = "mailchimp"
api_key = "${CRMSYNC_TEST_MC_KEY}"
list_id = "abc123"
""",
        encoding="utf-8",
    )
    config = load_config(path)
    spec = config.destinations.get("mc")
    assert spec is None  # not used by a pipeline: validated, but not resolved
    from crmsync.config import validate_connector

    issues: list[object] = []
    checked = validate_connector(
        "crmsync.destinations", "destinations", "mc", config.settings.destinations["mc"], issues
    )  # type: ignore[arg-type]
    assert checked is not None and not issues
    assert "0123456789abcdef" not in repr(checked.config)
    assert "0123456789abcdef" not in str(checked.config)


def test_the_example_config_is_valid_and_documents_every_core_key() -> None:
    config = load_config(ROOT / "config.example.toml")
    assert "demo" in config.pipelines
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    from crmsync.config import PipelineSettings, ProfileSettings, RfmSettings, Settings

    for model in (Settings, PipelineSettings, ProfileSettings, RfmSettings):
        for name in model.model_fields:
            assert name in text, f"config.example.toml does not mention {model.__name__}.{name}"


def test_environment_overrides_the_state_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crmsync.toml"
    path.write_text('[state]\nurl = "sqlite:///a.db"\n', encoding="utf-8")
    monkeypatch.setenv("CRMSYNC_STATE__URL", "sqlite:////tmp/elsewhere.db")
    assert load_config(path).state_url == "sqlite:////tmp/elsewhere.db"


def test_a_destination_tag_prefix_must_match_its_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_MC_KEY", "0123456789abcdef0123456789abcdef-us21")
    text = f"""
[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{ROOT}/sample_data/customers.csv"

[destinations.mc]
kind = "mailchimp"
api_key = "${{CRMSYNC_TEST_MC_KEY}}"
list_id = "abc123"
tag_prefix = "shop-"

[pipelines.main]
sources = ["shop"]
destinations = ["mc"]
"""
    found = issues_of(text, tmp_path)
    assert (
        "differs from the mapping's [memberships] prefix 'crm-'"
        in found["destinations.mc.tag_prefix"]
    )
