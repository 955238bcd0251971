"""The HubSpot example in config.example.toml, uncommented, is a valid destination table."""

from __future__ import annotations

import tomllib
from pathlib import Path

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
