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

A run whose batches are pushed by many processes (Celery workers) holds its moves where
all of them see the same (the context's ``SharedMoves``, in the state database) under
one job for the run: calls are cut from everything held in a group, whichever process
held it, and whichever process collects the run's job sends the rest and answers every
person with the failures any process kept. The run's calls are then those of one
process.

The vendor's connector keeps what is its own: what a member id is (an address, a profile
or record id), how calls are sent, and the results it gives its people.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from connectors.kit.gather import Gathered
from connectors.kit.memberships import MembershipCall, Move, plan_membership_calls
from crmsync.contract import JOIN, LEAVE, HeldMove, SharedMoves
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
    """One run's held moves, and the failures of people answered PENDING on its job.

    ``shared``: where the run's processes hold its moves together (a run on workers);
    without it, this process holds them in memory.
    """

    def __init__(
        self,
        send: Send,
        batch_size: int,
        *,
        paired: bool,
        prefix: str,
        noun: str,
        shared: SharedMoves | None = None,
    ) -> None:
        """``prefix``: of the run's job name ("tags:", "lists:"); ``noun``: the vendor's
        word for a group, in failure reasons."""
        self._send_calls, self._noun = send, noun
        self._batch_size, self._paired = batch_size, paired
        token = shared.token if shared is not None else uuid.uuid4().hex
        self.job = prefix + token  # one per destination, so one per run
        self._held: _Hold = (
            _SharedHold(shared, batch_size, paired)
            if shared is not None
            else _LocalHold(batch_size, paired)
        )
        self._finished = False  # this run's job was finished: moves go out at once
        # pushes and a collect of one run may overlap: what is held, and the count of
        # holds whose calls are out, change under this condition; the calls themselves
        # go out without it, so one push's calls do not wait for another's
        self._lock = threading.Condition(threading.RLock())
        self._sending = 0

    def hold(self, moves: Sequence[Move]) -> Held:
        """Holds these (member, groups to join, groups to leave) moves and sends every call
        now full (everything, once this run's job is finished)."""
        with self._lock:
            calls, still = self._held.take([m for m in moves if m[1] or m[2]], self._finished)
            self._sending += 1
        try:
            failed, transients = self._send(calls)
            here = {member for member, _, _ in moves}
            waiting = here & still
            # failures of people answered PENDING, now or by an earlier push: kept before
            # this hold counts as done, so a ``finish`` waiting for it answers them
            later = {m: why for m, why in failed.items() if m not in here}
            later.update((m, failed[m]) for m in waiting if m in failed)
            with self._lock:
                self._held.fail(later)
        finally:
            with self._lock:
                self._sending -= 1
                self._lock.notify_all()
        return Held(failed, transients, waiting)

    def finish(self, job: str, moves: Sequence[Move] = ()) -> Sent:
        """The failures of a job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once ``moves``, rebuilt from its
        changes, are sent again."""
        with self._lock:
            if job == self.job:  # only the first page finds anything still held
                self._finished = True
                # a hold whose calls are out may yet fail people answered PENDING
                self._lock.wait_for(lambda: self._sending == 0)
                calls, _ = self._held.take([], True)
                failed, transients = self._send(calls)
                self._held.fail(failed)
                return self._held.failures(), transients
            calls = plan_membership_calls(
                [m for m in moves if m[1] or m[2]], self._batch_size, paired=self._paired
            )
            return self._send(calls)

    def _send(self, calls: Sequence[MembershipCall]) -> Sent:
        if not calls:
            return {}, []
        try:
            sent = self._send_calls(calls)
        except BaseException as exc:
            # whatever stopped the calls (a refused key, a bug, an interrupt): nobody in
            # them is confirmed, and those answered PENDING must not be acknowledged later
            reasons: dict[str, str] = {}
            for call in calls:
                reason = f"{self._noun} {call.group!r} not applied: {exc}"
                reasons.update((member, reason) for member in call.members())
            with self._lock:
                self._held.fail(reasons)
            raise
        with self._lock:
            self._held.sent(calls)
        return sent


class _Hold(Protocol):
    """Where a run's moves wait: this process's memory, or shared by the run's processes."""

    def take(
        self, moves: Sequence[Move], everything: bool
    ) -> tuple[list[MembershipCall], set[str]]:
        """Holds ``moves`` and takes out every call now full (``everything``: all that is
        held, in the fewest calls); with the members of their groups still held."""
        ...

    def sent(self, calls: Sequence[MembershipCall]) -> None: ...

    def fail(self, reasons: Mapping[str, str]) -> None: ...

    def failures(self) -> dict[str, str]: ...


class _LocalHold:
    """The run's moves in this process's memory (``Gathered``: member ids only)."""

    def __init__(self, batch_size: int, paired: bool) -> None:
        self._gathered = Gathered(batch_size, paired=paired)
        self._failed: dict[str, str] = {}  # member -> why a move failed (PENDING people)

    def take(
        self, moves: Sequence[Move], everything: bool
    ) -> tuple[list[MembershipCall], set[str]]:
        self._gathered.add(moves)
        calls = self._gathered.rest() if everything else self._gathered.full()
        return calls, self._gathered.waiting()

    def sent(self, calls: Sequence[MembershipCall]) -> None:
        pass  # taken out of memory already

    def fail(self, reasons: Mapping[str, str]) -> None:
        self._failed.update(reasons)

    def failures(self) -> dict[str, str]:
        return dict(self._failed)


class _SharedHold:
    """The run's moves where every process of the run holds them (``SharedMoves``): the
    calls are cut here, by ``Gathered``, from what is held in the groups concerned."""

    def __init__(self, shared: SharedMoves, batch_size: int, paired: bool) -> None:
        self._shared, self._batch_size, self._paired = shared, batch_size, paired

    def take(
        self, moves: Sequence[Move], everything: bool
    ) -> tuple[list[MembershipCall], set[str]]:
        found: list[list[MembershipCall]] = []
        still: set[str] = set()

        def cut(held: list[HeldMove]) -> list[HeldMove]:
            gathered = Gathered(self._batch_size, paired=self._paired)
            gathered.add(
                (member, (group,) if side == JOIN else (), (group,) if side == LEAVE else ())
                for group, side, member in held
            )
            calls = gathered.rest() if everything else gathered.full()
            found.append(calls)
            still.update(gathered.waiting())
            return _held(calls)

        held = [(g, JOIN, member) for member, add, _ in moves for g in add]
        held += [(g, LEAVE, member) for member, _, remove in moves for g in remove]
        self._shared.exchange(held, cut, everything=everything)
        return (found[-1] if found else []), still

    def sent(self, calls: Sequence[MembershipCall]) -> None:
        self._shared.sent(_held(calls))

    def fail(self, reasons: Mapping[str, str]) -> None:
        self._shared.fail(reasons)

    def failures(self) -> dict[str, str]:
        return self._shared.failures()


def _held(calls: Sequence[MembershipCall]) -> list[HeldMove]:
    moves = [(call.group, JOIN, member) for call in calls for member in call.add]
    return moves + [(call.group, LEAVE, member) for call in calls for member in call.remove]
