"""The run's helper threads: each started in a copy of the run's context."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable


def started(work: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread running ``work`` in a copy of the run's context, so its log lines
    keep the run's fields; started."""
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name=name, daemon=True
    )
    thread.start()
    return thread
