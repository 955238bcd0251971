"""What ``-v`` tells of a run: one INFO line per finished stage (how many, in how long),
and at the run's end one line with the time each part of it took.

``PhaseLog`` is a ``crmsync.progress.Progress``: the stages that feed the live display feed
these lines too, so both always agree on what a stage counted. Lines carry counts and
names of stages, sources and destinations only, never a record's content.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from crmsync.progress import unit_of
from crmsync.stopwatch import Stopwatch

log = logging.getLogger("crmsync.run")


@dataclass
class _Stage:
    unit: str
    started: float
    done: int = 0


class PhaseLog:
    """Counts each stage's advances and logs the stage when it finishes."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            self._stages[stage] = _Stage(unit or unit_of(stage), time.perf_counter())

    def grow(self, stage: str, n: int) -> None:
        with self._lock:
            self._stage(stage)  # a stage known only from its first batch starts there

    def estimate(self, stage: str, total: int) -> None:
        return None  # a log line tells what was done, not what was expected

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            self._stage(stage).done += n

    def finish(self, stage: str, done: int | None = None) -> None:
        with self._lock:
            found = self._stages.pop(stage, None)
        if found is None or not self.log.isEnabledFor(logging.INFO):
            return
        count = found.done if done is None else done
        seconds = time.perf_counter() - found.started
        rate = f", {count / seconds:,.0f}/s" if seconds > 0 and count else ""
        unit = f" {found.unit}" if found.unit else ""
        self.log.info("%s: %s%s in %.2f s%s", stage, f"{count:,}", unit, seconds, rate)

    def close(self) -> None:
        with self._lock:
            self._stages.clear()

    def _stage(self, stage: str) -> _Stage:
        found = self._stages.get(stage)
        if found is None:
            found = self._stages[stage] = _Stage(unit_of(stage), time.perf_counter())
        return found


def log_run_times(pipeline: str, status: str, stages: Stopwatch) -> None:
    """The run's wall time and each part's (stages overlap, so they need not add up),
    with the time spent writing the ledger on a line of its own."""
    if not log.isEnabledFor(logging.INFO):
        return
    figures = stages.as_dict()
    wall = figures.pop("wall", 0.0)
    ledger = figures.get("ledger")
    if ledger is not None:
        log.info("ledger: %.2f s (in-flight marks and acknowledgements)", ledger)
    parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in figures.items())
    log.info("run %s %s in %.2f s (%s)", pipeline, status, wall, parts or "nothing done")
