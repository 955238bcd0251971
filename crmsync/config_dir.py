"""A directory of configuration files, one per store, over a shared base file.

A platform operator runs crmsync for many merchants from one directory::

    stores/
      _base.toml      shared: [state], [defaults], [segments], schedules, ... (optional)
      acme.toml       the store "acme": its sources, destinations and pipelines
      globex.toml     the store "globex"

Each store's file is deep-merged over ``_base.toml`` (tables merge key by key, the store's
value wins; a list or a value replaces the base's) and validated on its own, so a broken
store file breaks only that store. The base's name starts with ``_``, which no store name
may, so it can never be mistaken for a store; files whose names start with ``.`` (editor
locks and backups) are ignored.

Every store writes to the one state database of the base. The state database keys staged
records and cursors by source name, the ledger by destination name and runs and leases by
pipeline name, so a store's names are qualified with the store's name once its file is
validated: the pipeline ``main`` of the store ``acme`` is ``acme.main`` in the state
database, in reports, logs and metrics. A store name never holds a ``.``, so two stores'
qualified names never meet. Issues keep the names written in the file, so they point at
the line to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from crmsync.config import Config, ConnectorSpec, DestinationSpec, PipelineSpec
from crmsync.errors import ConfigIssue

BASE_FILE = "_base.toml"
SEPARATOR = "."
STORE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
NAME_RULE = "1 to 40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
MAX_QUALIFIED = 64  # the state database's columns for source, destination, pipeline names
# sections that belong to the whole process, not to one store: only the base sets them
SHARED_SECTIONS = ("state", "serve", "observe", "alerts", "celery")
_NAMED = ("sources", "destinations", "pipelines")


def store_name_issue(name: str) -> ConfigIssue | None:
    if STORE_NAME.fullmatch(name):
        return None
    return ConfigIssue(
        "<store>",
        f"{name!r} is not a store name (the file name without .toml)",
        f"rename the file: a store name is {NAME_RULE}",
    )


def store_files(directory: Path) -> dict[str, Path]:
    """Store name -> its file, sorted by name; the base and hidden files are not stores."""
    found = {
        path.name[: -len(".toml")]: path
        for path in directory.iterdir()
        if path.name.endswith(".toml")
        and path.name != BASE_FILE
        and not path.name.startswith(".")
        and not path.is_dir()
    }
    return dict(sorted(found.items()))


def base_file(directory: Path) -> Path | None:
    path = directory / BASE_FILE
    return path if path.is_file() else None


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged over ``base``; neither is changed."""
    out = dict(base)
    for key, value in over.items():
        current = out.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = merged(current, value)
        else:
            out[key] = value
    return out


def shared_section_issues(raw: Mapping[str, Any]) -> list[ConfigIssue]:
    """A store's file may not set what every store shares."""
    return [
        ConfigIssue(
            section,
            f"[{section}] is shared by every store of the directory",
            f"set it in {BASE_FILE}, not in a store's file",
        )
        for section in SHARED_SECTIONS
        if section in raw
    ]


def qualified(store: str, name: str) -> str:
    return f"{store}{SEPARATOR}{name}" if store else name


def long_name_issues(store: str, raw: Mapping[str, Any]) -> list[ConfigIssue]:
    """Names that would not fit the state database once qualified with the store's."""
    issues = []
    for section in _NAMED:
        table = raw.get(section)
        for name in table if isinstance(table, Mapping) else ():
            full = qualified(store, str(name))
            if len(full) > MAX_QUALIFIED:
                issues.append(
                    ConfigIssue(
                        f"{section}.{name}",
                        f"{full!r}, the name with its store's, is longer than "
                        f"{MAX_QUALIFIED} characters",
                        "use a shorter name",
                    )
                )
    return issues


def mapping_files(raw: Mapping[str, Any], directory: Path) -> list[Path]:
    """The mapping files a store's destinations name, for telling when a store changed."""
    table = raw.get("destinations")
    found = []
    for body in table.values() if isinstance(table, Mapping) else ():
        mapping = body.get("mapping") if isinstance(body, Mapping) else None
        if isinstance(mapping, str):
            found.append(directory / mapping)
    return found


def qualify(config: Config, store: str) -> Config:
    """``config`` with its sources, destinations and pipelines named ``<store>.<name>``."""

    def name(local: str) -> str:
        return qualified(store, local)

    sources: dict[str, ConnectorSpec] = {
        name(n): replace(s, name=name(n)) for n, s in config.sources.items()
    }
    destinations: dict[str, DestinationSpec] = {
        name(n): replace(d, name=name(n)) for n, d in config.destinations.items()
    }
    pipelines: dict[str, PipelineSpec] = {}
    for local, spec in config.pipelines.items():
        own = spec.settings.model_copy(
            update={
                "sources": [name(s) for s in spec.settings.sources],
                "destinations": [name(d) for d in spec.settings.destinations],
            }
        )
        pipelines[name(local)] = replace(
            spec,
            name=name(local),
            settings=own,
            sources=tuple(sources[name(s.name)] for s in spec.sources),
            destinations=tuple(destinations[name(d.name)] for d in spec.destinations),
        )
    settings = config.settings.model_copy(
        update={
            "sources": {name(n): v for n, v in config.settings.sources.items()},
            "destinations": {name(n): v for n, v in config.settings.destinations.items()},
            "pipelines": {n: p.settings for n, p in pipelines.items()},
        }
    )
    return replace(
        config,
        settings=settings,
        sources=sources,
        destinations=destinations,
        pipelines=pipelines,
        store=store,
    )


def pipeline_name(store: str, pipeline: str | None) -> str | None:
    """A ``--pipeline`` for the store: its own name, or already qualified with the store's."""
    if pipeline is None or not store or pipeline.startswith(store + SEPARATOR):
        return pipeline
    return qualified(store, pipeline)


def store_of(pipeline: str | None) -> str | None:
    """The store a qualified pipeline name names (``acme.main`` -> ``acme``), if any."""
    if pipeline is None or SEPARATOR not in pipeline:
        return None
    store = pipeline.split(SEPARATOR, 1)[0]
    return store if STORE_NAME.fullmatch(store) else None
