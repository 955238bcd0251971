"""The Pusher's sender thread: planning goes on while a batch is on the wire, up to a bound;
sender failures are classified and surfaced as when pushing was synchronous."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import TransientError
from crmsync.runs import DestinationReport, RunOptions
from engine import push as push_module
from engine.push import QUEUED_BATCHES, Pusher
from state import schema
from state.store import Store
from tests.test_push import RETRY, change, in_flight

WAIT = 30.0  # seconds a test waits for another thread before it gives up


class Recording:
    """Answers every change OK, recording each batch and the thread that pushed it; a
    ``gate`` holds the first push until it is set, ``fail`` decides per push whether to
    raise instead."""

    max_batch = 2

    def __init__(
        self,
        gate: threading.Event | None = None,
        fail: Callable[[int], BaseException | None] = lambda n: None,
    ) -> None:
        self.gate, self.fail = gate, fail
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.on_the_wire = threading.Event()

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        self.batches.append([c.person_key for c in changes])
        self.threads.add(threading.current_thread().name)
        self.on_the_wire.set()
        if self.gate is not None and len(self.batches) == 1:
            assert self.gate.wait(WAIT)
        error = self.fail(len(self.batches))
        if error is not None:
            raise error
        return [PushResult(c.person_key, Outcome.OK, remote_id=c.person_key) for c in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        return None


def pusher_for(store: Store, destination: Recording) -> tuple[Pusher, DestinationReport]:
    report = DestinationReport("dest", "recording")
    pusher = Pusher("dest", destination, store, report, RunOptions(), None, RETRY)  # type: ignore[arg-type]
    return pusher, report


def acknowledged(store: Store) -> set[str]:
    ledger = schema.ledger
    with store.engine.connect() as conn:
        return set(conn.execute(sa.select(ledger.c.person_key)).scalars())


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the other thread never got there"
        time.sleep(0.01)


def test_planning_goes_on_while_a_batch_is_on_the_wire_up_to_the_bound(state_url: str) -> None:
    store = Store(state_url)
    gate = threading.Event()
    destination = Recording(gate)
    pusher, report = pusher_for(store, destination)
    planned: list[int] = []

    def plan() -> None:
        for n in range(12):
            pusher.add(change(n))
            planned.append(n)

    planner = threading.Thread(target=plan)
    planner.start()
    # the first batch is on the wire and held there; planning goes on meanwhile...
    assert destination.on_the_wire.wait(WAIT)
    room = 2 + QUEUED_BATCHES * 2 + 1  # pushing, queued, and one pending in the Pusher
    wait_until(lambda: len(planned) == room)
    # ...until the queue is full: the next full batch waits for the vendor
    time.sleep(0.2)
    assert len(planned) == room and planner.is_alive()
    assert set(in_flight(store)) == {"e:p0@example.com", "e:p1@example.com"}  # marked first
    assert acknowledged(store) == set()
    gate.set()
    planner.join(WAIT)
    pusher.flush()
    everyone = {change(n).person_key for n in range(12)}
    assert acknowledged(store) == everyone and in_flight(store) == {}
    assert report.counts["ok"] == 12
    # batches cut at the same positions as without the thread, pushed in that order
    assert destination.batches == [
        [change(n).person_key for n in (i, i + 1)] for i in (0, 2, 4, 6, 8, 10)
    ]
    assert destination.threads == {"push-dest"}
    store.close()


def test_a_connector_error_stops_sending_and_counts_the_rest_as_not_sent(
    state_url: str,
) -> None:
    store = Store(state_url)
    destination = Recording(
        fail=lambda n: TransientError("Mailchimp is unreachable") if n == 2 else None
    )
    pusher, report = pusher_for(store, destination)
    for n in range(10):
        pusher.add(change(n))
    pusher.flush()
    assert report.error == "Mailchimp is unreachable"
    # the batch that met the outage failed (retried next run); nothing went out after it
    assert len(destination.batches) == 2
    assert report.counts["ok"] == 2 and report.counts["failed"] == 2
    assert report.counts["not_sent"] == 6
    failures = schema.failures
    with store.engine.connect() as conn:
        failed = set(conn.execute(sa.select(failures.c.person_key)).scalars())
    assert failed == {"e:p2@example.com", "e:p3@example.com"}
    store.close()


def test_an_unexpected_error_in_the_sender_is_raised_to_the_planner(state_url: str) -> None:
    store = Store(state_url)
    destination = Recording(fail=lambda n: RuntimeError("a bug") if n == 1 else None)
    pusher, report = pusher_for(store, destination)
    with pytest.raises(RuntimeError, match="a bug"):
        for n in range(10):
            pusher.add(change(n))
        pusher.flush()
    pusher.close()
    # the batch stays in flight (it may have been applied); nothing more was sent
    assert set(in_flight(store)) == {"e:p0@example.com", "e:p1@example.com"}
    assert destination.batches == [["e:p0@example.com", "e:p1@example.com"]]
    assert not report.error
    store.close()


def test_an_in_memory_state_database_is_pushed_to_from_the_planners_thread() -> None:
    store = Store("sqlite://")
    destination = Recording()
    pusher, report = pusher_for(store, destination)
    for n in range(3):
        pusher.add(change(n))
    pusher.flush()
    assert destination.threads == {threading.current_thread().name}
    assert report.counts["ok"] == 3 and len(acknowledged(store)) == 3
    store.close()


def test_a_batch_is_recorded_while_the_next_one_is_pushed(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 1's ledger write waits until batch 2 is on the wire: were they done in turn by
    one thread, this would never finish. Batch 2 is in flight before it goes out."""
    store = Store(state_url)
    second_sent = threading.Event()
    seen_in_flight: list[set[str]] = []
    record = push_module.record_results

    def slow_record(conn: sa.Connection, *args: Any, **kwargs: Any) -> dict[str, int]:
        assert second_sent.wait(WAIT), "batch 2 was never pushed while batch 1 was recorded"
        return record(conn, *args, **kwargs)

    class Watching(Recording):
        def push(self, changes: Sequence[Change]) -> list[PushResult]:
            if self.batches:
                seen_in_flight.append(set(in_flight(store)))
                second_sent.set()
            return super().push(changes)

    monkeypatch.setattr(push_module, "record_results", slow_record)
    destination = Watching()
    pusher, report = pusher_for(store, destination)
    for n in range(4):
        pusher.add(change(n))
    pusher.flush()
    assert {change(2).person_key, change(3).person_key} <= seen_in_flight[0]
    assert acknowledged(store) == {change(n).person_key for n in range(4)}
    assert in_flight(store) == {} and report.counts["ok"] == 4
    store.close()
