"""A fake vendor served from a child process of the benchmark, talked to through a proxy.

A fake that answers in the benchmark's own process competes with the destination's
threads for that process's GIL (the HubSpot fake validates every contact of every call
in Python) and its work counts in the destination's CPU: the bench would then measure
the fake as much as crmsync. Served from a process of its own, as the real vendor is,
the fake's cost stays out of both, and it can stay as strict as the tests keep it.

The host is a small class of the bench's (its constructor starts the fake, ``stop()``
stops it) whose methods answer in values that cross a process boundary: counters, names,
no generators and no live objects. Hosts are registered by module and class name, so
two benches' hosts of one class name never collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.managers import BaseManager
from typing import Any


class FakeProcess(BaseManager):
    """Serves the benches' fake hosts from a child process."""


@contextmanager
def served_in_child(host: Callable[..., Any], *args: Any) -> Iterator[Any]:
    """A proxy to ``host(*args)`` built in a new child process; on exit the host's
    ``stop()`` is called and the process ended."""
    typeid = f"{host.__module__}.{getattr(host, '__qualname__', 'host')}"
    FakeProcess.register(typeid, host)
    process = FakeProcess()
    process.start()
    try:
        proxy = getattr(process, typeid)(*args)
        try:
            yield proxy
        finally:
            proxy.stop()
    finally:
        process.shutdown()
