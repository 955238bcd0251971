"""One registry of connectors by kind, fed by entry points so third parties can add theirs.

Connector modules are imported only when a configuration uses their kind, so importing
crmsync has no side effects and a broken optional connector cannot break the others.

The kinds crmsync ships are its own distribution's entry points, read from its metadata
alone; every installed package's are read only for a kind crmsync does not ship (or to
list them all). Reading every package's costs tens of milliseconds (one file per
installed package), in every run. A package cannot take over a kind crmsync ships.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points
from importlib.resources.abc import Traversable
from typing import Any

from crmsync.errors import ConfigError

SOURCES = "crmsync.sources"
DESTINATIONS = "crmsync.destinations"
DISTRIBUTION = "crmsync"  # whose entry points are the kinds crmsync ships


@cache
def _shipped(group: str) -> dict[str, EntryPoint]:
    """The kinds crmsync's own distribution registers (none when it is not installed)."""
    try:
        found = distribution(DISTRIBUTION).entry_points
    except PackageNotFoundError:
        return {}
    return {ep.name: ep for ep in found if ep.group == group}


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    """Every installed package's kinds, crmsync's own over any other's of the same name."""
    return {**{ep.name: ep for ep in entry_points(group=group)}, **_shipped(group)}


def kinds(group: str) -> list[str]:
    return sorted(_entry_points(group))


def load(group: str, kind: str, *, key: str) -> Any:
    """The connector class registered for ``kind``; ``key`` names the config key for errors."""
    found = _shipped(group).get(kind) or _entry_points(group).get(kind)
    if found is None:
        raise ConfigError(
            f"unknown kind {kind!r}",
            key=key,
            hint=f"use one of: {', '.join(kinds(group))}",
        )
    return found.load()


def default_mapping(kind: str, *, key: str = "mapping") -> Traversable:
    """The mapping file the destination kind ships, from its class (``default_mapping``)."""
    cls = load(DESTINATIONS, kind, key=key)
    found: Traversable | None = getattr(cls, "default_mapping", None)
    if found is None or not found.is_file():
        raise ConfigError(
            f"destination kind {kind!r} ships no default mapping",
            key=key,
            hint="give the path of a mapping file (format: mappings/README.md)",
        )
    return found
