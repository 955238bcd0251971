"""One run's held membership moves in one process (``connectors.kit.run_moves``) when
pushes overlap (a destination with ``pushes_at_once`` above one): a push's calls go out
while another push's calls are still on the wire, and the run's collect waits for every
call out before it answers the people left PENDING, so nobody is acknowledged while a
move of theirs may still fail."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from connectors.kit.memberships import MembershipCall
from connectors.kit.run_moves import Held, RunMoves, Sent

WAIT = 10.0  # seconds a test waits for a thread that should finish at once
T = TypeVar("T")


class GatedVendor:
    """Membership calls; while ``gated``, the next call waits at ``gate`` (``held`` tells
    when one does) and the ones after it do not. Members in ``refuse`` fail; while
    ``broken``, a call raises instead."""

    def __init__(self, refuse: Sequence[str] = (), *, gated: bool = True) -> None:
        self.refuse, self.gated, self.broken = set(refuse), gated, False
        self.gate, self.held = threading.Event(), threading.Event()
        self.calls: list[MembershipCall] = []

    def send(self, calls: Sequence[MembershipCall]) -> Sent:
        self.calls.extend(calls)
        if self.gated:
            self.gated = False  # only the first call waits
            self.held.set()
            assert self.gate.wait(WAIT)
        if self.broken:
            raise RuntimeError("connection reset")
        failed = {m: "refused" for c in calls for m in c.members() if m in self.refuse}
        return failed, [None] * len(calls)


def _moves(*members: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(member, ("vip",), ()) for member in members]


def _in_thread(work: Callable[[], T]) -> tuple[threading.Thread, list[T | BaseException]]:
    """``work`` on a thread of its own; what it returned (or raised) lands in the list."""
    out: list[T | BaseException] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_push_sends_its_calls_while_another_push_s_calls_are_out() -> None:
    vendor = GatedVendor()
    moves = RunMoves(vendor.send, 2, paired=True, prefix="tags:", noun="tag")
    first, first_out = _in_thread(lambda: moves.hold(_moves("a1", "a2")))
    assert vendor.held.wait(WAIT)  # the first push's call is on the wire
    # the second push fills a call of its own and sends it without waiting
    second = moves.hold(_moves("b1", "b2"))
    assert second.failed == {} and second.waiting == set()
    assert first.is_alive()
    vendor.gate.set()
    first.join(WAIT)
    assert isinstance(first_out[0], Held) and first_out[0].waiting == set()
    assert [c.add for c in vendor.calls] == [("a1", "a2"), ("b1", "b2")]


def test_the_collect_waits_for_calls_out_and_answers_their_failures() -> None:
    vendor = GatedVendor(refuse=["p1"], gated=False)
    moves = RunMoves(vendor.send, 2, paired=True, prefix="tags:", noun="tag")
    assert moves.hold(_moves("p1")).waiting == {"p1"}  # answered PENDING: its call is not full
    vendor.gated = True
    # another push fills the call with p1's move in it; the call waits at the gate
    pushing, _ = _in_thread(lambda: moves.hold(_moves("p2")))
    assert vendor.held.wait(WAIT)
    collecting, collected = _in_thread(lambda: moves.finish(moves.job))
    collecting.join(0.3)
    assert collecting.is_alive()  # p1's move is out: the collect cannot answer yet
    vendor.gate.set()
    collecting.join(WAIT)
    pushing.join(WAIT)
    assert collected == [({"p1": "refused"}, [])]


def test_a_call_that_raised_leaves_its_pending_people_failed_not_waited_for() -> None:
    vendor = GatedVendor(gated=False)
    moves = RunMoves(vendor.send, 2, paired=True, prefix="tags:", noun="tag")
    assert moves.hold(_moves("p1")).waiting == {"p1"}
    vendor.broken = True
    with pytest.raises(RuntimeError, match="connection reset"):
        moves.hold(_moves("p2"))
    vendor.broken = False
    collecting, collected = _in_thread(lambda: moves.finish(moves.job))
    collecting.join(WAIT)
    assert not collecting.is_alive()  # no call counted as out for ever
    assert not isinstance(collected[0], BaseException)
    failed, _ = collected[0]
    assert set(failed) == {"p1", "p2"}
    assert failed["p1"].startswith("tag 'vip' not applied: connection reset")
