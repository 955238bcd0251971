"""The run's helper threads: each started in a copy of the run's context."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def started(work: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread running ``work`` in a copy of the run's context, so its log lines
    keep the run's fields; started."""
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name=name, daemon=True
    )
    thread.start()
    return thread


@contextmanager
def beside(work: Callable[[], T], name: str) -> Iterator[Future[T]]:
    """``work`` on a thread of its own, in a copy of the run's context, while the block
    runs: the block takes its ``result()`` where it needs it (which raises what ``work``
    raised); leaving the block, even by an error, waits for ``work`` to end."""
    with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
        yield pool.submit(contextvars.copy_context().run, work)
