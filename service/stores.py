"""The stores a service runs: every store of a directory (or the one configuration file),
each loaded on its own, and what changed between two loads.

``load_stores`` never fails because one store is broken: a broken store is kept with its
issues so the scheduler can report it (``StoreBroken``) while every other store syncs.
Each store carries a digest of the files it was read from (its own, the base and the
mapping files it names), so ``diff`` tells a reload which stores to reschedule without
comparing configurations. The directory's format and how store names qualify source,
destination and pipeline names live in ``crmsync.config_dir``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from crmsync import config_dir
from crmsync.config import Config, read_toml
from crmsync.errors import ConfigError, ConfigIssue
from engine.resolve import load_config, load_store


@dataclass(frozen=True)
class StoreEntry:
    """One store: its configuration, or the issues that keep it from loading."""

    name: str  # "" for a single configuration file
    path: Path
    digest: str
    config: Config | None
    issues: tuple[ConfigIssue, ...] = ()

    @property
    def ok(self) -> bool:
        return self.config is not None


@dataclass(frozen=True)
class StoreSet:
    path: Path  # the configuration file or the directory
    entries: Mapping[str, StoreEntry]

    def __iter__(self) -> Iterator[StoreEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def configs(self) -> dict[str, Config]:
        """The stores that loaded, by name."""
        return {n: e.config for n, e in self.entries.items() if e.config is not None}

    @property
    def broken(self) -> dict[str, tuple[ConfigIssue, ...]]:
        """The stores that did not load, by name, with their issues."""
        return {n: e.issues for n, e in self.entries.items() if e.config is None}

    @property
    def state_url(self) -> str | None:
        """The state database every store shares (None when no store loaded)."""
        return next((c.state_url for c in self.configs.values()), None)


@dataclass(frozen=True)
class StoreDiff:
    """What a reload changes, by store name (each name in exactly one group)."""

    added: tuple[str, ...]  # new, and loads
    changed: tuple[str, ...]  # its files changed, and it loads
    removed: tuple[str, ...]  # gone from the directory
    broken: tuple[str, ...]  # does not load (new, changed or not)
    unchanged: tuple[str, ...]  # the same files as before, and loads

    @property
    def quiet(self) -> bool:
        """Nothing to do: no store added, changed, removed or broken."""
        return not (self.added or self.changed or self.removed or self.broken)


def load_stores(path: str | Path) -> StoreSet:
    """The stores of a configuration file (one store named ``""``) or of a directory.

    A broken store is an entry with its issues; ConfigError only when the path itself is
    unusable (missing, or a directory without store files)."""
    path = Path(path)
    if not path.is_dir():
        read = [path, *_mappings(path.parent, [path])]
        return StoreSet(path, {"": _entry("", path, read, partial(load_config, path))})
    files = config_dir.store_files(path)
    if not files:
        raise ConfigError(
            f"{path} holds no store file",
            key="--config",
            hint=f"add one <store>.toml per store (with the shared {config_dir.BASE_FILE})",
        )
    base = path / config_dir.BASE_FILE
    entries = {}
    for name, file in files.items():
        read = [base, file, *_mappings(path, [base, file])]
        entries[name] = _entry(name, file, read, partial(load_store, path, name))
    return StoreSet(path, entries)


def diff(old: StoreSet, new: StoreSet) -> StoreDiff:
    added, changed, broken, unchanged = [], [], [], []
    for name, entry in new.entries.items():
        before = old.entries.get(name)
        if not entry.ok:
            broken.append(name)
        elif before is None:
            added.append(name)
        elif before.digest != entry.digest or not before.ok:
            changed.append(name)
        else:
            unchanged.append(name)
    removed = [name for name in old.entries if name not in new.entries]
    return StoreDiff(tuple(added), tuple(changed), tuple(removed), tuple(broken), tuple(unchanged))


def _entry(name: str, path: Path, read: list[Path], load: Callable[[], Config]) -> StoreEntry:
    digest = _digest(read)
    try:
        config = load()
    except ConfigError as exc:
        return StoreEntry(name, path, digest, None, exc.issues)
    return StoreEntry(name, path, digest, config)


def _digest(paths: list[Path]) -> str:
    """Of the files' names and contents (a missing file counts as absent)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"\0missing")
        h.update(b"\0")
    return h.hexdigest()


def _mappings(directory: Path, files: list[Path]) -> list[Path]:
    """The mapping files the files' destinations name (none from an unreadable file)."""
    found: list[Path] = []
    for path in files:
        if not path.is_file():
            continue
        try:
            found += config_dir.mapping_files(read_toml(path), directory)
        except ConfigError:
            continue
    return found
