"""Membership moves gathered across a whole run, released a full call at a time.

Planning calls per push leaves a part-filled call per group and direction in every push:
a run of many pushes pays those remainders again and again. Held across the run instead,
a group's moves go out as soon as they fill a call and only the last remainder of each
group waits for the end of the run, which is the per-run floor. Only member ids are held
(never changes), at most a call's worth per group and direction, so memory stays bounded
however large the run.

Not thread-safe by itself: the destination that owns it calls it from one thread at a
time (its push and its collect).
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.kit.memberships import MembershipCall, Move


class Gathered:
    """Held moves by group: adds and removes, each an ordered set of member ids.

    ``paired``: one call carries a group's adds and removes together (Mailchimp's
    static-segment batch, HubSpot's add-and-remove), so a call is full when either side
    fills it; otherwise adds and removes go in calls of their own (Klaviyo).
    """

    def __init__(self, batch_size: int, *, paired: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.paired = paired
        self._adds: dict[str, dict[str, None]] = {}  # dicts as ordered sets: oldest first
        self._removes: dict[str, dict[str, None]] = {}

    def add(self, moves: Iterable[Move]) -> None:
        for member, add, remove in moves:
            for group in add:
                self._adds.setdefault(group, {})[member] = None
            for group in remove:
                self._removes.setdefault(group, {})[member] = None

    def full(self) -> list[MembershipCall]:
        """Takes out every call that is full (oldest members first), sorted by group."""
        return self._take(everything=False)

    def rest(self) -> list[MembershipCall]:
        """Takes out everything still held, in the fewest calls."""
        return self._take(everything=True)

    def waiting(self) -> set[str]:
        """Members with a move still held (at most a few calls' worth per group)."""
        held: set[str] = set()
        for side in (self._adds, self._removes):
            for members in side.values():
                held.update(members)
        return held

    def __len__(self) -> int:
        """How many moves are held."""
        return sum(len(m) for side in (self._adds, self._removes) for m in side.values())

    def _take(self, *, everything: bool) -> list[MembershipCall]:
        n = self.batch_size
        least = 1 if everything else n
        calls: list[MembershipCall] = []
        for group in sorted(self._adds.keys() | self._removes.keys()):
            adds, removes = self._adds.get(group, {}), self._removes.get(group, {})
            if self.paired:
                while len(adds) >= least or len(removes) >= least:
                    calls.append(MembershipCall(group, _pop(adds, n), _pop(removes, n)))
            else:
                while len(adds) >= least:
                    calls.append(MembershipCall(group, _pop(adds, n), ()))
                while len(removes) >= least:
                    calls.append(MembershipCall(group, (), _pop(removes, n)))
            for side in (self._adds, self._removes):
                if not side.get(group, True):
                    del side[group]
        return calls


def _pop(members: dict[str, None], count: int) -> tuple[str, ...]:
    """Removes and returns the oldest ``count`` members (fewer when there are fewer)."""
    taken: list[str] = []
    for member in members:
        if len(taken) == count:
            break
        taken.append(member)
    for member in taken:
        del members[member]
    return tuple(taken)
