"""Membership calls: which calls a batch of moves needs, as few as possible, and the guard.

Vendors move people in and out of a group in batches, per group: Mailchimp's static
segment call takes up to 500 ``members_to_add`` *and* 500 ``members_to_remove`` at once,
and so does HubSpot's lists ``add-and-remove`` (paired); Klaviyo's relationship calls take
either adds or removes (not paired). Grouping every person's moves by group therefore
needs, per group, max(⌈adds/n⌉, ⌈removes/n⌉) calls when paired and ⌈adds/n⌉ +
⌈removes/n⌉ when not, which is the floor. Where a group's create call carries its first
members, those adds need no call at all. Pure functions; the I/O is the connector's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from crmsync.contract import Change

# (member id as the vendor knows it, groups to add, groups to remove)
Move = tuple[str, Sequence[str], Sequence[str]]


@dataclass(frozen=True, slots=True)
class MembershipCall:
    """One batch call on one group."""

    group: str
    add: tuple[str, ...]
    remove: tuple[str, ...]

    def members(self) -> tuple[str, ...]:
        return self.add + self.remove


def plan_membership_calls(
    moves: Iterable[Move], batch_size: int, *, paired: bool
) -> list[MembershipCall]:
    """The fewest calls that apply every move: grouped by group, sorted by group name,
    members in the order of the moves (each once per group and direction).

    ``paired``: one call may carry adds and removes of one group together (Mailchimp's
    static-segment batch, HubSpot's add-and-remove); otherwise a call carries only adds or
    only removes (Klaviyo's relationship calls).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    adds, removes = _by_group(moves)
    calls: list[MembershipCall] = []
    for group in sorted(adds.keys() | removes.keys()):
        to_add, to_remove = adds.get(group, []), removes.get(group, [])
        if paired:
            count = max(_calls(len(to_add), batch_size), _calls(len(to_remove), batch_size))
            for i in range(count):
                window = slice(i * batch_size, (i + 1) * batch_size)
                calls.append(MembershipCall(group, tuple(to_add[window]), tuple(to_remove[window])))
            continue
        for start in range(0, len(to_add), batch_size):
            calls.append(MembershipCall(group, tuple(to_add[start : start + batch_size]), ()))
        for start in range(0, len(to_remove), batch_size):
            calls.append(MembershipCall(group, (), tuple(to_remove[start : start + batch_size])))
    return calls


def floor_calls(
    adds: Mapping[str, int],
    removes: Mapping[str, int],
    batch_size: int,
    *,
    paired: bool,
    carried: Mapping[str, int] | None = None,
) -> int:
    """The least number of membership calls any client needs for these per-group counts.

    ``carried``: per group, the adds its create call takes along (a new group created with
    its first members); those need no membership call.
    """
    total = 0
    for group in adds.keys() | removes.keys():
        added = max(adds.get(group, 0) - (carried or {}).get(group, 0), 0)
        add_calls = _calls(added, batch_size)
        remove_calls = _calls(removes.get(group, 0), batch_size)
        total += max(add_calls, remove_calls) if paired else add_calls + remove_calls
    return total


def members_to_add(moves: Iterable[Move]) -> dict[str, list[str]]:
    """Group -> the members to add to it, in the order of the moves: the first of them are
    the ones a new group's create call can carry."""
    adds, _ = _by_group(moves)
    return adds


def minus_carried(moves: Iterable[Move], carried: Mapping[str, Collection[str]]) -> list[Move]:
    """The moves still to make once create calls carried some members into their groups;
    moves left with nothing to do are dropped."""
    done = {group: set(members) for group, members in carried.items()}
    left: list[Move] = []
    for member, add, remove in moves:
        still = tuple(group for group in add if member not in done.get(group, ()))
        if still or remove:
            left.append((member, still, tuple(remove)))
    return left


def owned_problem(change: Change, prefix: str, max_name: int, *, noun: str = "group") -> str | None:
    """Why this change's memberships must not be applied, or None when they are fine.

    Defence in depth: the core only passes groups it owns, but a membership outside the
    owned prefix is refused here too, so a marketer's hand-made group can never be
    emptied. ``noun`` is what the vendor calls a group ("tag", "list") in the message.
    """
    adds, removes = change.memberships_add, change.memberships_remove
    for name in (*adds, *removes):
        if not name.startswith(prefix):
            return (
                f"refusing to change {noun} {name!r}: crmsync only adds or removes {noun}s "
                f"that start with its prefix {prefix!r}"
            )
        if len(name) > max_name or not name.strip():
            return f"{noun} {name[:40]!r}... is empty or longer than {max_name} characters"
    if removes and not set(adds).isdisjoint(removes):
        both = sorted(set(adds) & set(removes))
        return f"{noun} {both[0]!r} is both added and removed"
    return None


def _by_group(moves: Iterable[Move]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    adds: dict[str, dict[str, None]] = {}  # dicts as ordered sets: each member once
    removes: dict[str, dict[str, None]] = {}
    for member, add, remove in moves:
        for group in add:
            adds.setdefault(group, {})[member] = None
        for group in remove:
            removes.setdefault(group, {})[member] = None
    return (
        {group: list(members) for group, members in adds.items()},
        {group: list(members) for group, members in removes.items()},
    )


def _calls(members: int, batch_size: int) -> int:
    return math.ceil(members / batch_size)
