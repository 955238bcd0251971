"""SIGTERM handled like Ctrl-C while a command runs pipelines.

A service manager (systemd, Kubernetes, ``docker stop``) stops a process with SIGTERM,
whose default action ends it at once: the run would stay ``running`` in the state
database, its counts unwritten, until the next run found it. Within ``stop_on_signals``
SIGTERM and SIGINT raise ``Interrupted`` in the main thread instead, which unwinds the
run the way Ctrl-C always has (the batch on the wire is answered and recorded, the run is
marked ``interrupted`` with the reason and what was acknowledged), and the command exits
with 143 or 130.

A second signal while the run records its end is not turned into another exception,
which could cut that recording short: a second SIGTERM is ignored, a second Ctrl-C is
Python's own ``KeyboardInterrupt`` again, for someone who will not wait.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from crmsync.runs import SIGINT_REASON, Interrupted

_REASONS = {
    signal.SIGINT: (SIGINT_REASON, 128 + signal.SIGINT),
    signal.SIGTERM: ("stopped by SIGTERM", 128 + signal.SIGTERM),
}


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` (main thread only:
    elsewhere signals cannot be handled, and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _REASONS}

    def stop(number: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        reason, code = _REASONS[signal.Signals(number)]
        raise Interrupted(reason, code)

    for number in _REASONS:
        signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, _handler(handler))


def _handler(handler: Any) -> Any:
    """``getsignal`` answers None for a handler not installed from Python: the default."""
    return signal.SIG_DFL if handler is None else handler
