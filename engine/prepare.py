"""Each destination's preparation, made beside the pull.

A destination's ``prepare`` makes the fields, properties and lists the mapping needs
(and lists what it holds) with calls of its own that depend on nothing the pull stages.
Made after the pull, they came before the first push: a first sync of 100,000 customers
waited 0.9 s for Mailchimp's ten merge fields, created one after another, and 1.6 s for
HubSpot's properties. ``Preparing`` starts them in a thread of its own when the run opens
the destination, before the pull, beside its consent read-back; the run waits for them
(``wait``, which raises what ``prepare`` raised, in the run's thread) only when it is
about to settle earlier jobs and plan, where it called ``prepare`` before. A run that
fails first still waits for the calls to end before the destination is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from crmsync.contract import Destination, FieldSpec
from engine.threads import started


class Preparing:
    """Destination ``name``'s ``prepare(fields)``, running from ``start`` until ``wait``."""

    def __init__(self, name: str, destination: Destination, fields: Sequence[FieldSpec]) -> None:
        self.name, self.destination, self.fields = name, destination, fields
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Preparing:
        self._thread = started(self._prepare, f"crmsync-prepare-{self.name}")
        return self

    def _prepare(self) -> None:
        try:
            self.destination.prepare(self.fields)
        except BaseException as exc:  # raised again in the run's thread, by ``wait``
            self._error = exc

    def wait(self) -> None:
        """Waits for ``prepare`` to end and raises what it raised."""
        if self._thread is not None:
            self._thread.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> Preparing:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:  # its calls end before the destination is closed
            self._thread.join()
