"""``crmsync init``: a commented starting configuration and mapping file for one source
kind and one destination kind.

The core writes the frame (state, defaults, a segment, the pipeline); each connector
kind brings its own table as a snippet it ships (``starter``, a data file beside the
connectors), so what a vendor needs stays with its connector, and a third-party kind
without one still gets a working skeleton. The destination's mapping is a copy of the
one its kind ships, written beside the configuration so the operator can edit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from crmsync import registry

CONFIG_NAME = "crmsync.toml"
SOURCE_NAME = "shop"
PIPELINE_NAME = "main"

_HEAD = """\
# crmsync configuration, written by `crmsync init --source {source} --destination {destination}`.
# Every key, with what it does: config.example.toml in crmsync's repository; the fields
# segment rules and mappings may use: `crmsync fields`.
# Secrets never go in this file: write "${{ENV_VAR}}" and crmsync reads the environment.
# Any key can also be set by CRMSYNC_<SECTION>__<KEY> variables (CRMSYNC_STATE__URL).
# Next: `crmsync check --config {config}`, then `crmsync plan --config {config}` (a dry
# run), then `crmsync run --config {config}`.

# default_segments: include the built-in segments (new, repeat, loyal, vip, at_risk,
# lapsed, cart_abandoners, only_discount, birthday_this_month).
default_segments = true

[state]
# url: the state database (staging, cursors, ledger, runs). SQLite here; PostgreSQL for
# production: "postgresql://crmsync@db:5432/crmsync".
url = "sqlite:///var/crmsync.db"

[defaults]
# region: for phone numbers written without a country code (ISO 3166-1 alpha-2).
region = "TR"
# timezone: for source times written without an offset (IANA name).
timezone = "Europe/Istanbul"
# currency: the ISO 4217 currency of profile amounts.
currency = "TRY"

# -- the source ---------------------------------------------------------------------------
"""

_MIDDLE = """
# -- the destination ----------------------------------------------------------------------
"""

_TAIL = """
# -- segments: [segments.NAME] rule = "..." (fields: `crmsync fields`) -------------------
[segments.big_spender_90d]
rule = "spent_90d > 1000"
description = "spent over 1,000 in the last 90 days"

# -- the pipeline: which sources feed which destinations ----------------------------------
[pipelines.{pipeline}]
sources = ["{source_name}"]
destinations = ["{destination_name}"]
# segments: which segments to compute; omit for all defined and built-in ones.
# segments = ["new", "vip", "big_spender_90d"]
# schedule: a cron expression (minute hour day month weekday) for `crmsync serve`.
# schedule = "*/30 * * * *"
"""

_MAPPING_HEAD = """\
# The mapping of destination {destination_name} ({destination}): which profile fields it
# gets and under what names (format: mappings/README.md in crmsync's repository; the
# fields: `crmsync fields`). Written by `crmsync init` from the one the kind ships.

"""


@dataclass(frozen=True, slots=True)
class Starter:
    """The files ``init`` writes: path (relative to the target directory) -> text."""

    files: dict[Path, str]

    def existing(self, directory: Path) -> list[Path]:
        return [directory / path for path in self.files if (directory / path).exists()]

    def write(self, directory: Path) -> list[Path]:
        written = []
        for path, text in self.files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as handle:  # never over a file
                handle.write(text)
            written.append(target)
        return written


def starter(source: str, destination: str) -> Starter:
    """The configuration and mapping for a source kind and a destination kind (both
    registered: ``registry.load`` raises a ``ConfigError`` naming the kinds there are)."""
    destination_name = destination
    mapping = Path("mappings") / f"{destination_name}.toml"
    source_table = _snippet(registry.SOURCES, source, "sources", SOURCE_NAME)
    destination_table = _snippet(
        registry.DESTINATIONS, destination, "destinations", destination_name
    ).replace("@MAPPING@", mapping.as_posix())
    if mapping.as_posix() not in destination_table:  # a snippet without the placeholder
        destination_table = destination_table.replace(
            f'kind = "{destination}"\n',
            f'kind = "{destination}"\nmapping = "{mapping.as_posix()}"\n',
            1,
        )
    config = (
        _HEAD.format(source=source, destination=destination, config=CONFIG_NAME)
        + source_table
        + _MIDDLE
        + destination_table
        + _TAIL.format(
            pipeline=PIPELINE_NAME, source_name=SOURCE_NAME, destination_name=destination_name
        )
    )
    shipped = registry.default_mapping(destination, key="--destination").read_text("utf-8")
    head = _MAPPING_HEAD.format(destination_name=destination_name, destination=destination)
    return Starter({Path(CONFIG_NAME): config, mapping: head + shipped})


def _snippet(group: str, kind: str, section: str, name: str) -> str:
    cls = registry.load(group, kind, key=f"--{section[:-1]}")
    found: Traversable | None = getattr(cls, "starter", None)
    if found is None or not found.is_file():
        return f'[{section}.{name}]\nkind = "{kind}"\n# the keys of this kind: its documentation\n'
    return found.read_text("utf-8").replace("@NAME@", name)
