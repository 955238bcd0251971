"""The membership moves of one run: held until they fill a call, the rest sent when the run
ends, with the ledger kept honest through the contract's pending results.

Membership calls planned per push (or per import job) would leave a part-filled call per
group in every one of them. Held across the run instead (``Gathered``: member ids only),
a group's calls go out as soon as they are full, and each group's last remainder when
the core collects the run's own job at the end of the run: the per-run floor.

A person whose moves are all confirmed when their push ends is OK; one with a move still
held is answered PENDING on this run's job, and ``finish`` gives the failures once
everything held has been sent. A run that stops before its end (killed, or its collect
never reached) leaves those people in flight on that job; the next run's collect hands
their changes back, and their moves are rebuilt and sent again (``finish`` of an earlier
job): adding a member to a group, or removing one, twice is harmless. Once this run's
job is finished, moves that still arrive go out at once.

The vendor's connector keeps what is its own: what a member id is (an address, a profile
or record id), how calls are sent, and the results it gives its people.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from connectors.kit.gather import Gathered
from connectors.kit.memberships import MembershipCall, Move, plan_membership_calls
from crmsync.errors import TransientError

# member id -> why a move failed, and each call's transient error (None: not transient)
Sent = tuple[dict[str, str], list[TransientError | None]]
Send = Callable[[Sequence[MembershipCall]], Sent]


@dataclass
class Held:
    """What became of a batch of moves when they were held."""

    failed: dict[str, str] = field(default_factory=dict)  # member -> why a sent move failed
    transients: list[TransientError | None] = field(default_factory=list)  # per call sent
    waiting: set[str] = field(default_factory=set)  # members of the batch with a move held

    def answers(self, people: Sequence[tuple[str, str]]) -> dict[str, str | None]:
        """For (person key, member) pairs, those not OK: None while a move of theirs is
        held (PENDING), else why a move failed."""
        answers: dict[str, str | None] = {}
        for person, member in people:
            if member in self.waiting:
                answers[person] = None
            elif member in self.failed:
                answers[person] = self.failed[member]
        return answers


class RunMoves:
    """One run's held moves, and the failures of people answered PENDING on its job."""

    def __init__(
        self, send: Send, batch_size: int, *, paired: bool, prefix: str, noun: str
    ) -> None:
        """``prefix``: of the run's job name ("tags:", "lists:"); ``noun``: the vendor's
        word for a group, in failure reasons."""
        self._send_calls, self._noun = send, noun
        self._batch_size, self._paired = batch_size, paired
        self.job = prefix + uuid.uuid4().hex  # one per destination, so one per run
        self._held = Gathered(batch_size, paired=paired)
        self._failed: dict[str, str] = {}  # member -> why a move failed (PENDING people)
        self._finished = False  # this run's job was finished: moves go out at once
        self._lock = threading.Lock()  # a push and a collect of one run could overlap

    def hold(self, moves: Sequence[Move]) -> Held:
        """Holds these (member, groups to join, groups to leave) moves and sends every call
        now full (everything, once this run's job is finished)."""
        with self._lock:
            self._held.add(m for m in moves if m[1] or m[2])
            calls = self._held.rest() if self._finished else self._held.full()
            failed, transients = self._send(calls)
            here = {member for member, _, _ in moves}
            waiting = here & self._held.waiting()
            # failures of people answered PENDING, now or by an earlier push
            self._failed.update((m, why) for m, why in failed.items() if m not in here)
            self._failed.update((m, failed[m]) for m in waiting if m in failed)
        return Held(failed, transients, waiting)

    def finish(self, job: str, moves: Sequence[Move] = ()) -> Sent:
        """The failures of a job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once ``moves``, rebuilt from its
        changes, are sent again."""
        with self._lock:
            if job == self.job:  # only the first page finds anything still held
                self._finished = True
                failed, transients = self._send(self._held.rest())
                self._failed.update(failed)
                return dict(self._failed), transients
            calls = plan_membership_calls(
                [m for m in moves if m[1] or m[2]], self._batch_size, paired=self._paired
            )
            return self._send(calls)

    def _send(self, calls: Sequence[MembershipCall]) -> Sent:
        if not calls:
            return {}, []
        try:
            return self._send_calls(calls)
        except BaseException as exc:
            # whatever stopped the calls (a refused key, a bug, an interrupt): nobody in
            # them is confirmed, and those answered PENDING must not be acknowledged later
            for call in calls:
                reason = f"{self._noun} {call.group!r} not applied: {exc}"
                self._failed.update((member, reason) for member in call.members())
            raise
