"""What the service tells its observers (metrics, alerts, logs), as plain values.

The scheduler emits these; ``service.metrics``, ``service.alerts`` and the logs consume
them through ``Observer``. Every event names its store (``""`` when crmsync serves one
configuration file, not a directory of stores) and, where it has one, its pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from crmsync.config import Config
from crmsync.runs import RunReport


@dataclass(frozen=True)
class StoreLoaded:
    """A store's configuration was loaded (at start or on reload), with its pipelines;
    ``config``, when given, lets observers read the store's state database (metrics'
    pending jobs, failure backlog and last success; alerts' last success; readiness)."""

    store: str
    pipelines: tuple[str, ...]
    config: Config | None = None


@dataclass(frozen=True)
class StoreBroken:
    """A store's configuration could not be loaded: it does not sync until fixed (while
    serving, a store that was running keeps its last good configuration)."""

    store: str
    issues: tuple[str, ...]
    kept_previous: bool = False


@dataclass(frozen=True)
class RunStarted:
    store: str
    pipeline: str
    kind: str  # "scheduled", "manual", "backfill"
    at: datetime


@dataclass(frozen=True)
class RunFinished:
    """A run ended, whatever its outcome; ``report.status`` says which (succeeded,
    partial, failed, interrupted), ``report.error`` why."""

    store: str
    pipeline: str
    report: RunReport
    seconds: float
    at: datetime


@dataclass(frozen=True)
class RunSkipped:
    """A scheduled run did not start: the pipeline's lease is held (``holder``) by another
    process, or its previous run is still going."""

    store: str
    pipeline: str
    reason: str
    holder: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class NextRun:
    store: str
    pipeline: str
    at: datetime | None  # None: not scheduled any more


Event = StoreLoaded | StoreBroken | RunStarted | RunFinished | RunSkipped | NextRun


class Observer(Protocol):
    def notify(self, event: Event) -> None:
        """Called from the scheduler's threads; must be thread-safe and must not raise."""


@dataclass
class Observers:
    """Hands every event to each observer; an observer that raises is logged, not fatal."""

    parts: list[Observer] = field(default_factory=list)

    def notify(self, event: Event) -> None:
        import logging

        for part in self.parts:
            try:
                part.notify(event)
            except Exception:
                logging.getLogger("crmsync.service").exception(
                    "observer %s failed on %s", type(part).__name__, type(event).__name__
                )
