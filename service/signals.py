"""The main thread of ``serve``: it waits for signals and acts on them.

SIGHUP reloads the configuration. SIGTERM (``docker stop``, systemd) and SIGINT (Ctrl-C)
stop the service: no run starts any more, each run under way stops after the batch in
flight and is recorded ``interrupted`` with the reason, its lease is released, and the
process exits 0 once they have ended, or 1 after ``serve.stop_grace_seconds`` if one has
not (its lease then lapses: held by a dead process, it is free on this host at once and
elsewhere after its time to live; the next run marks the run interrupted). While stopping,
a second Ctrl-C exits at once; a second SIGTERM is ignored.

The handlers only put the signal's number in a queue (``SimpleQueue.put`` may be called
from a signal handler): everything else happens in the loop, between two signals.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

from crmsync.runs import SIGINT_REASON

log = logging.getLogger("crmsync.service")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
REASONS = {
    signal.SIGTERM: ("stopped by SIGTERM", 128 + signal.SIGTERM),
    signal.SIGINT: (SIGINT_REASON, 128 + signal.SIGINT),
}
_POLL = 0.2  # seconds between looks at the queue (a handler may run between them)


class Serving(Protocol):
    def reload(self) -> bool: ...

    def stop(self, reason: str, exit_code: int) -> None: ...

    def wait(self, timeout: float) -> bool: ...


@contextmanager
def signals_queued() -> Iterator[queue.SimpleQueue[int]]:
    """Within the block, the handled signals are queued instead of acted on."""
    inbox: queue.SimpleQueue[int] = queue.SimpleQueue()
    previous = {number: signal.getsignal(number) for number in HANDLED}

    def handler(number: int, _frame: Any) -> None:
        inbox.put(number)

    for number in HANDLED:
        signal.signal(number, handler)
    try:
        yield inbox
    finally:
        for number, old in previous.items():
            signal.signal(number, signal.SIG_DFL if old is None else old)


def serve_until_stopped(
    service: Serving,
    inbox: queue.SimpleQueue[int],
    grace: Callable[[], float],
    *,
    exit_now: Callable[[int], None] = os._exit,
) -> int:
    """Reloads on SIGHUP until SIGTERM or SIGINT, then stops ``service``; returns the
    exit code (0: every run ended within ``grace()`` seconds, 1: one did not)."""
    while True:
        number = _next(inbox, None)
        if number == signal.SIGHUP:
            log.warning("SIGHUP: reloading the configuration")
            if service.reload():
                log.warning("configuration reloaded")
            continue
        if number in REASONS:
            break
    reason, code = REASONS[signal.Signals(number)]
    seconds = grace()
    log.warning("%s: stopping (runs under way end after the batch in flight)", reason)
    service.stop(reason, code)
    deadline = time.monotonic() + seconds
    while not service.wait(_POLL):
        again = _next(inbox, 0)
        if again == signal.SIGINT:
            log.error("interrupted again: exiting without waiting for the runs")
            _flush()
            exit_now(128 + signal.SIGINT)
            return 128 + signal.SIGINT
        if again == signal.SIGTERM:
            log.warning("SIGTERM again: already stopping")
        if time.monotonic() >= deadline:
            log.error("runs still going after %.0fs (serve.stop_grace_seconds): exiting", seconds)
            return 1
    log.warning("stopped")
    return 0


def _next(inbox: queue.SimpleQueue[int], timeout: float | None) -> int | None:
    """The next queued signal, waiting up to ``timeout`` (None: until one comes)."""
    while True:
        try:
            return inbox.get(timeout=_POLL if timeout is None else timeout)
        except queue.Empty:
            if timeout is not None:
                return None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
