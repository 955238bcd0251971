"""What a worker process keeps between tasks: configurations, state stores and open
destinations.

Loading a configuration (validating every connector, compiling mappings and rules) costs
far more than most tasks, so a worker keeps each one until its file changes. A state
store (its connection pool) is kept per database. A destination is kept per run, opened
once and used by the run's pushes in this process one at a time, as a run in one
process does. The run prepared it once already (its prepare task, and the coordinator
for its groups): a destination that can take over what that preparation found
(``crmsync.contract.PreparedOnce``) takes it from the state database, with no call;
another is prepared again here (``prepare``: its fields exist). A destination that
gathers calls across a run holds its membership moves in the state database with every
other worker's of the run (``state.held_moves``), so that they go out in full calls.
Destinations of other runs are closed as new runs come, and every one when the process
ends (``close_all``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.contract import ConnectorContext, Destination, PreparedOnce
from crmsync.errors import ConfigError
from distributed.work import Work, prepare_key, ready_key
from engine.pipeline import context_for
from engine.resolve import load_config
from state.held_moves import HeldInState
from state.store import Store
from state.work_queue import DONE, tasks

KEPT_DESTINATIONS = 8  # open destinations per process (a few runs' worth)

_lock = threading.Lock()  # a worker may run tasks in threads (--pool threads)
_configs: dict[tuple[str, str], tuple[tuple[tuple[str, int, int], ...], Config]] = {}
_stores: dict[str, Store] = {}
_destinations: OrderedDict[tuple[str, int, str], _Open] = OrderedDict()


@dataclass
class _Open:
    destination: Destination
    busy: threading.Lock


def _signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """The configuration's files, with their sizes and modification times."""
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    found = []
    for each in files:
        stat = each.stat()
        found.append((str(each), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def config_of(work: Work, *, fresh: bool = False) -> Config:
    """The task's configuration, loaded again when a file of it changed (or ``fresh``)."""
    path = Path(work.config)
    key = (work.config, work.store)
    signature = _signature(path)
    with _lock:
        kept = _configs.get(key)
        if kept is not None and kept[0] == signature and not fresh:
            return kept[1]
    config = load_config(path, work.store or None)
    with _lock:
        _configs[key] = (signature, config)
    return config


def pipeline_of(config: Config, work: Work) -> PipelineSpec:
    spec = config.pipelines.get(work.pipeline)
    if spec is None:
        raise ConfigError(
            f"{work.config} has no pipeline {work.pipeline!r} any more (run {work.run} runs it)",
            key="pipelines",
            hint="give every worker the configuration the run was started with",
        )
    return spec


def store_of(url: str) -> Store:
    """The state store at ``url``; the coordinator migrated it before any task was sent."""
    with _lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = Store(url, migrate=False)
        return store


@contextmanager
def destination_of(config: Config, spec: DestinationSpec, run: int) -> Iterator[Destination]:
    """The run's destination ``spec`` in this process, opened and prepared on first use,
    held for the caller alone while it pushes or collects."""
    key = (str(config.path), run, spec.name)
    with _lock:
        kept = _destinations.get(key)
        if kept is not None:
            _destinations.move_to_end(key)
    if kept is None:
        context = run_context(config, spec.name, store_of(config.state_url).engine, run)
        instance = spec.cls(spec.config, context)
        try:
            found = _prepared(config, spec.name, run)
            if found is not None and isinstance(instance, PreparedOnce):
                instance.adopt(found)
            else:
                instance.prepare(spec.mapping.field_specs())
        except BaseException:
            instance.close()
            raise
        opened = _Open(instance, threading.Lock())
        with _lock:
            kept = _destinations.setdefault(key, opened)  # another thread's, if it was first
            stale = [opened] if kept is not opened else []
            while len(_destinations) > KEPT_DESTINATIONS:
                stale.append(_destinations.popitem(last=False)[1])
        for old in stale:
            with old.busy:
                old.destination.close()
    with kept.busy:
        yield kept.destination


def run_context(config: Config, name: str, engine: Engine, run: int) -> ConnectorContext:
    """Destination ``name``'s context in a run on workers: its membership moves wait in
    the state database, where every process of the run holds them under one job
    (``state.held_moves``)."""
    return replace(context_for(config, name), moves=HeldInState(engine, run, name))


def _prepared(config: Config, name: str, run: int) -> dict[str, Any] | None:
    """What the run's preparation of destination ``name`` found (``PreparedOnce``): as
    the coordinator left it once its groups were ready, else as the prepare task did;
    None when neither said (a destination that cannot tell, or a run begun by an older
    version)."""
    wanted = (ready_key(name), prepare_key(name))
    with store_of(config.state_url).engine.connect() as conn:
        rows = {**tasks(conn, run, wanted[0]), **tasks(conn, run, wanted[1])}
    for key in wanted:
        row = rows.get(key)  # exactly: "prepare/a" also begins "prepare/ab"
        found = row.result.get("prepared") if row is not None and row.state == DONE else None
        if isinstance(found, dict):
            return dict(found)
    return None


def close_all() -> None:
    """Closes every destination and state store this process opened (it is ending)."""
    with _lock:
        destinations = list(_destinations.values())
        stores = list(_stores.values())
        _destinations.clear()
        _stores.clear()
        _configs.clear()
    for kept in destinations:
        with kept.busy:
            kept.destination.close()
    for store in stores:
        store.close()
