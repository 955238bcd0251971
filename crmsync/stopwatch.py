"""Where a run's time goes: seconds and CPU per stage, kept beside the run's report.

Stages overlap once work is pipelined (a push thread sends while planning goes on), so a
stage's figure is the time spent doing that stage's work, wherever it ran; the stages do
not add up to the run's wall time, and ``wall`` says what that was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Thread-safe totals of wall seconds per stage name (``pull.read``, ``push.mc`` ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.wall = 0.0

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.started

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            figures = {name: round(value, 3) for name, value in sorted(self.seconds.items())}
        return {**figures, "wall": round(self.wall, 3)}
