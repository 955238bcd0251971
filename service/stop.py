"""Stopping the runs of ``serve`` at a batch boundary.

A signal reaches only the main thread, while ``serve`` runs pipelines in worker threads;
so a stop is a flag (``StopFlag``) that each run looks at through its progress seam
(``StopAtBatch``): the next time the run's own thread reports progress (a stage begins, a
batch is read or handed to a destination) it raises ``Interrupted``, and the run unwinds
as it does on Ctrl-C in ``crmsync run``: the batch already on the wire is answered and
recorded, queued batches are dropped (never marked in flight, so never lost), and the run
is recorded ``interrupted`` with the reason. Calls from other threads (a destination's
sender, a reader) never raise: an exception there would not unwind the run.
"""

from __future__ import annotations

import threading

from crmsync.progress import Progress
from crmsync.runs import Interrupted


class StopFlag:
    """Set once, by the main thread; read by every run."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.exit_code = 0

    def set(self, reason: str, exit_code: int) -> None:
        if not self._event.is_set():
            self.reason, self.exit_code = reason, exit_code
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class StopAtBatch:
    """A ``Progress`` that passes every call on to ``inner`` and, once ``stop`` is set,
    raises ``Interrupted`` (once) in the thread that made it: the run's own thread."""

    def __init__(self, inner: Progress, stop: StopFlag) -> None:
        self.inner, self.stop = inner, stop
        self._owner = threading.get_ident()
        self._raised = False

    def _check(self) -> None:
        if self._raised or not self.stop.is_set() or threading.get_ident() != self._owner:
            return
        self._raised = True  # cleanup code reporting progress while unwinding is left alone
        raise Interrupted(self.stop.reason, self.stop.exit_code)

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        self.inner.start(stage, total, unit)
        self._check()

    def grow(self, stage: str, n: int) -> None:
        self._check()  # before the batch is handed over: not queued, not marked in flight
        self.inner.grow(stage, n)

    def estimate(self, stage: str, total: int) -> None:
        estimate = getattr(self.inner, "estimate", None)
        if estimate is not None:
            estimate(stage, total)

    def advance(self, stage: str, n: int) -> None:
        self.inner.advance(stage, n)
        self._check()

    def finish(self, stage: str, done: int | None = None) -> None:
        self.inner.finish(stage, done)

    def close(self) -> None:
        self.inner.close()
