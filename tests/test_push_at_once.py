"""A destination whose push may run on several threads (``pushes_at_once``) gets that many
batches on the wire at once; any other still gets one at a time. Either way every change
is marked in flight before it is sent and ends acknowledged exactly once."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from crmsync.contract import Change, Outcome, PushResult
from state.store import Store
from tests.test_push import change, in_flight
from tests.test_push_pipelined import WAIT, Recording, acknowledged, pusher_for, wait_until


class Overlapping(Recording):
    """Counts the pushes under way at once; each push waits (up to ``hold`` seconds)
    until another one is under way too."""

    def __init__(self, at_once: int | None, hold: float) -> None:
        super().__init__()
        if at_once is not None:
            self.pushes_at_once = at_once
        self.hold = hold
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.someone_else = threading.Condition(self.lock)

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.someone_else.notify_all()
            self.someone_else.wait_for(lambda: self.inside > 1, timeout=self.hold)
        try:
            return super().push(changes)
        finally:
            with self.lock:
                self.inside -= 1


def push_all(store: Store, destination: Recording, people: int) -> None:
    pusher, report = pusher_for(store, destination)
    for n in range(people):
        pusher.add(change(n))
    pusher.flush()
    assert report.counts["ok"] == people


def test_two_batches_go_out_at_once_where_the_destination_allows_it(state_url: str) -> None:
    store = Store(state_url)
    destination = Overlapping(at_once=2, hold=WAIT)
    push_all(store, destination, 12)
    assert destination.most == 2
    assert destination.threads == {"push-dest", "push-dest-1"}
    everyone = {change(n).person_key for n in range(12)}
    assert acknowledged(store) == everyone and in_flight(store) == {}
    pushed = [key for batch in destination.batches for key in batch]
    assert sorted(pushed) == sorted(everyone)  # each person once
    store.close()


def test_one_batch_at_a_time_where_the_destination_says_nothing(state_url: str) -> None:
    store = Store(state_url)
    destination = Overlapping(at_once=None, hold=0.2)  # would wait for a second push
    push_all(store, destination, 8)
    assert destination.most == 1
    assert destination.threads == {"push-dest"}
    store.close()


def test_a_batch_waiting_for_its_answer_is_in_flight_while_the_next_goes_out(
    state_url: str,
) -> None:
    """The first batch is held on the wire; the second goes out and is acknowledged
    meanwhile; the first stays in flight until its answer is recorded."""
    store = Store(state_url)
    gate = threading.Event()
    destination = Recording(gate)
    destination.pushes_at_once = 2  # type: ignore[attr-defined]
    pusher, report = pusher_for(store, destination)
    for n in range(4):
        pusher.add(change(n))
    pusher.flush(0)  # hands over the rest without waiting
    first = {change(0).person_key, change(1).person_key}
    wait_until(lambda: acknowledged(store) == {change(2).person_key, change(3).person_key})
    assert set(in_flight(store)) == first
    gate.set()
    pusher.flush()
    assert acknowledged(store) == first | {change(2).person_key, change(3).person_key}
    assert in_flight(store) == {}
    assert report.counts[Outcome.OK.value] == 4
    store.close()
