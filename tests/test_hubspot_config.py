"""The HubSpot example in config.example.toml, uncommented, is a valid destination table."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.hubspot import HubSpotConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def test_the_commented_example_is_valid_when_uncommented() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [destinations.hubspot]")
    block: list[str] = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    parsed = tomllib.loads("\n".join(block))["destinations"]["hubspot"]
    parsed["access_token"] = "pat-eu1-example"  # the loader fills ${...} from the environment
    config = HubSpotConfig.model_validate(parsed)
    assert config.lists and config.deletion == "archive"
    assert config.rate_limits.time_zone == "Europe/Istanbul"


def test_an_unknown_time_zone_is_refused_under_its_key() -> None:
    raw = {"access_token": "pat-eu1-example", "rate_limits": {"time_zone": "Mars/Olympus"}}
    with pytest.raises(ValidationError) as raised:
        HubSpotConfig.model_validate(raw)
    [error] = raised.value.errors()
    assert error["loc"] == ("rate_limits", "time_zone")
    assert "Mars/Olympus" in error["msg"] and "IANA" in error["msg"]
