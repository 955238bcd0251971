"""The consent read-back of one destination: its calls made beside the pull, its opt-outs
recorded after it.

A read-back asks the destination for every opt-out made since the last one (less a
lookback against clock skew), which after a first sync is every unsubscribe that sync
pushed: tens of thousands of members, rounds of paged calls. Those calls depend on
nothing the pull stages, so ``ConsentRead`` starts them (in a thread of its own) when the
run opens the destination, before the pull, and holds what they return in a bounded
queue; the look-ups and writes that decide which opt-outs are new must see what the pull
staged, so ``record`` does them after it, in the run's thread, as before. A run whose
pull reads a large export then pays nothing for the calls; a run with nothing to pull
still pays them once.

The cursor is taken when the calls start and moves only once every opt-out read was
recorded, so a change made while reading is picked up next time, and a run that fails
before ``record`` reads the same again.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TypeVar

from crmsync.contract import ConsentUpdate, Destination
from state.ledger import add_consent_events, opted_out
from state.store import Store
from state.timeutil import now_ms

CONSENT_LOOKBACK = timedelta(minutes=10)
# opt-outs read back that are looked up (``opted_out``) and recorded at a time: each is a
# parameter of one IN (...) list, well within the 32,766 of the SQLite crmsync needs
# (3.35 or newer, for RETURNING) and PostgreSQL's 65,535; larger chunks cost the same
CONSENT_CHUNK = 1000
# chunks read ahead of ``record`` at most (memory stays bounded at a million customers,
# whose first read-back holds some 150,000 opt-outs): the reader then waits for it
AHEAD = 50
T = TypeVar("T")


class _Done:
    """The reader's last item: the read ended (``error`` None) or failed."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class ConsentRead:
    """One destination's read-back: ``start`` makes its calls in a thread, ``record``
    stores the new opt-outs (in the caller's thread) and moves the cursor, ``close``
    stops the calls of a read never recorded (a run that failed before)."""

    def __init__(self, store: Store, name: str, destination: Destination) -> None:
        self.store, self.name, self.destination = store, name, destination
        self.since = store.cursor(name, "consent")
        self.started = datetime.now(UTC) - CONSENT_LOOKBACK
        self._chunks: queue.Queue[list[ConsentUpdate] | _Done] = queue.Queue(AHEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConsentRead:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> ConsentRead:
        """Starts the calls (daemon: a run stopped outright does not wait for them)."""
        self._thread = threading.Thread(
            target=self._read, name=f"crmsync-consent-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def record(self, scopes: Sequence[str]) -> int:
        """Stores the opt-outs read that crmsync does not know yet (``opted_out`` in
        ``scopes``) as consent events, a chunk per transaction, then moves the cursor to
        a little before the read began; returns how many were new. Raises what the read
        raised."""
        if self._thread is None:
            self.start()
        added = 0
        for chunk in self._read_chunks():
            with self.store.transaction() as conn:
                fresh: list[ConsentUpdate] = []
                for channel in {u.channel for u in chunk}:
                    same = [u for u in chunk if u.channel is channel]
                    known = opted_out(conn, [u.email for u in same], scopes, channel.value)
                    fresh += [u for u in same if u.email not in known]
                added += add_consent_events(conn, self.name, fresh, now_ms())
        since = self.since
        self.store.set_cursor(
            self.name, "consent", max(self.started, since) if since else self.started
        )
        return added

    def close(self) -> None:
        """Stops the reader (a read not recorded: its calls are not needed) and waits for
        it to leave, which it does after the call in hand."""
        self._stop.set()
        while self._thread is not None and self._thread.is_alive():
            # a reader waiting for room in the queue gets it, sees the stop, leaves
            with contextlib.suppress(queue.Empty):
                self._chunks.get(timeout=0.05)
        self._thread = None

    def _read(self) -> None:
        """The reader thread: the destination's opt-outs, a chunk at a time, into the
        queue; then the end (or what failed)."""
        updates = self.destination.read_consent(self.since)
        try:
            for chunk in chunks(updates, CONSENT_CHUNK):
                if not self._put(chunk):
                    return
            self._put(_Done())
        except BaseException as exc:  # handed to ``record``, raised in the run's thread
            self._put(_Done(exc))
        finally:
            close = getattr(updates, "close", None)
            if close is not None:
                close()  # a generator left part-way: its pages in flight are let go

    def _put(self, item: list[ConsentUpdate] | _Done) -> bool:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read_chunks(self) -> Iterator[list[ConsentUpdate]]:
        while True:
            item = self._chunks.get()
            if isinstance(item, _Done):
                self._thread = None  # it has left, or is leaving
                if item.error is not None:
                    raise item.error
                return
            yield item


def read_consent(store: Store, name: str, destination: Destination, scopes: Sequence[str]) -> int:
    """A whole read-back at once (``ConsentRead`` started and recorded); returns how many
    opt-outs were new."""
    with ConsentRead(store, name, destination) as read:
        return read.start().record(scopes)


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
