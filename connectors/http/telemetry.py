"""What the HTTP seam tells whoever listens: one ``Exchange`` per try, nothing else.

The seam (``connectors.http.client``) calls ``emit`` after each try (a response, or a
transport error); a layer above (``service.metrics``) registers a listener to count API
calls, 429s and retries per vendor. The connector layer never imports that layer: it only
keeps this registry, empty unless someone listens, so a CLI run pays one empty loop per try.

A try runs in a copy of the context the client was made in (``captured``): a destination
sends from its own worker threads, which start with an empty context, and without it the
labels a run binds with ``contextvars`` (its store, pipeline, run id) would be lost for the
calls those threads make, and for their log lines.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Exchange", "Listener", "add_listener", "captured", "emit", "remove_listener"]

log = logging.getLogger("crmsync.http")


@dataclass(frozen=True)
class Exchange:
    """One try of one request. ``vendor``: the part of the client's account label before
    its first ``:`` (``mailchimp``, ``klaviyo``, ``hubspot``, ``rest``), never a key or a
    host; ``status``: None when no response came (a timeout, a refused connection);
    ``attempt``: 1 for the first try of a request, 2 and up for its retries."""

    vendor: str
    method: str
    status: int | None
    attempt: int
    seconds: float


Listener = Callable[[Exchange], None]

_listeners: tuple[Listener, ...] = ()
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    global _listeners  # noqa: PLW0603 - a copy-on-write tuple: emit reads it without a lock
    with _lock:
        if listener not in _listeners:
            _listeners = (*_listeners, listener)


def remove_listener(listener: Listener) -> None:
    global _listeners  # noqa: PLW0603
    with _lock:
        _listeners = tuple(found for found in _listeners if found != listener)


def emit(exchange: Exchange) -> None:
    """Hands ``exchange`` to every listener; a listener that raises is logged, never the
    request's problem."""
    for listener in _listeners:
        try:
            listener(exchange)
        except Exception:
            log.exception("telemetry listener %r failed", listener)


def vendor_of(account: str) -> str:
    """``mailchimp:3f2a...`` -> ``mailchimp``: the vendor, without the account's hash."""
    return account.split(":", 1)[0] or "unknown"


def captured() -> contextvars.Context:
    """The caller's context, to run each try of a client in (see the module's docstring)."""
    return contextvars.copy_context()
