"""Every example commented out in config.example.toml is valid once uncommented.

An operator's first step is to uncomment a block of the example (a WooCommerce source, a
Mailchimp audience) and fill in the credentials; an example that ``check`` then refuses
is the worst first impression. Each block (a commented ``# [table]`` with its commented
keys) and each single commented ``# key = value`` line is uncommented in a copy of the
file, on its own, and the copy must pass ``crmsync check --offline``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
LINES = EXAMPLE.read_text(encoding="utf-8").splitlines()
ENVIRONMENT = {
    "WOO_CONSUMER_KEY": "ck_example",
    "WOO_CONSUMER_SECRET": "cs_example",
    "SHOP_DB_PASSWORD": "example",
    "MAILCHIMP_API_KEY": "0123456789abcdef0123456789abcdef-us6",
    "HUBSPOT_ACCESS_TOKEN": "pat-eu1-example",
}
_HEADER = re.compile(r"^# \[[A-Za-z0-9_.\-]+\]\s*(#.*)?$")


@dataclass(frozen=True)
class Example:
    start: int  # index of its first line in LINES
    end: int  # one past its last line
    table: str  # the table a block opens, "" for a single key

    @property
    def label(self) -> str:
        return f"line {self.start + 1}: {LINES[self.start][2:60]}"


def _is_toml(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def _uncommented(line: str) -> str | None:
    """The line without its ``# ``, when that is a header, a key or a nested comment."""
    if not line.startswith("# "):
        return None
    text = line[2:]
    if text.startswith("#") or _HEADER.match(line):
        return text
    return text if "=" in text and not text.startswith(" ") and _is_toml(text) else None


def examples() -> list[Example]:
    found: list[Example] = []
    i = 0
    while i < len(LINES):
        line = LINES[i]
        if _HEADER.match(line):
            end = i + 1
            while end < len(LINES) and _uncommented(LINES[end]) is not None:
                end += 1
            table = line[3 : line.index("]")]
            found.append(Example(i, end, table))
            i = end
            continue
        if _uncommented(line) is not None and not line.startswith("# #"):
            found.append(Example(i, i + 1, ""))
        i += 1
    return found


EXAMPLES = examples()


def test_the_examples_found_include_every_commented_block() -> None:
    tables = {example.table for example in EXAMPLES if example.table}
    assert {"sources.woo", "sources.shop_db", "destinations.newsletter"} <= tables
    assert "destinations.hubspot" in tables
    singles = [example for example in EXAMPLES if not example.table]
    assert len(singles) >= 10, [example.label for example in singles]


def _with(example: Example) -> str:
    lines = list(LINES)
    for index in range(example.start, example.end):
        text = _uncommented(lines[index])
        assert text is not None
        lines[index] = text
    if example.table.startswith("destinations."):
        name = example.table.split(".")[1]
        lines += ["", "[pipelines.example]", 'sources = ["demo_store"]']
        lines.append(f'destinations = ["{name}"]')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.label for e in EXAMPLES])
def test_each_commented_example_passes_check_once_uncommented(
    example: Example, tmp_path: Path
) -> None:
    path = tmp_path / "crmsync.toml"
    path.write_text(_with(example).replace('"sample_data/', f'"{ROOT}/sample_data/'), "utf-8")
    env = {**ENVIRONMENT, "CRMSYNC_STATE__URL": f"sqlite:///{tmp_path}/state.db"}
    result = CliRunner().invoke(main, ["check", "--offline", "--config", str(path)], env=env)
    assert result.exit_code == 0, f"{example.label}\n{result.output}"
    assert "ok (" in result.stdout
    assert "Traceback" not in result.output
