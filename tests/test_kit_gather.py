"""The kit's run-wide gathering of membership moves: full calls out at once, the rest at the
end, and together never more calls than the per-run floor for adds-only runs."""

from __future__ import annotations

import random

import pytest

from connectors.kit import Gathered, MembershipCall, floor_calls


def test_a_group_goes_out_as_soon_as_it_fills_a_call_oldest_members_first() -> None:
    held = Gathered(3, paired=True)
    held.add([("p1", ("g",), ()), ("p2", ("g",), ()), ("p3", ("h",), ())])
    assert held.full() == []
    assert held.waiting() == {"p1", "p2", "p3"}
    held.add([("p4", ("g",), ()), ("p5", ("g",), ())])
    assert held.full() == [MembershipCall("g", ("p1", "p2", "p4"), ())]
    assert held.waiting() == {"p3", "p5"} and len(held) == 2
    assert held.rest() == [MembershipCall("g", ("p5",), ()), MembershipCall("h", ("p3",), ())]
    assert held.rest() == [] and held.waiting() == set()


def test_paired_calls_take_removes_along_and_a_full_side_sends_the_call() -> None:
    held = Gathered(2, paired=True)
    held.add([("a", (), ("g",)), ("b", (), ("g",)), ("c", ("g",), ())])
    assert held.full() == [MembershipCall("g", ("c",), ("a", "b"))]


def test_unpaired_calls_carry_only_adds_or_only_removes() -> None:
    held = Gathered(2, paired=False)
    held.add([("a", ("g",), ()), ("b", ("g",), ()), ("c", (), ("g",))])
    assert held.full() == [MembershipCall("g", ("a", "b"), ())]
    assert held.rest() == [MembershipCall("g", (), ("c",))]


@pytest.mark.parametrize("paired", [True, False])
def test_an_adds_only_run_in_many_pushes_costs_the_per_run_floor(paired: bool) -> None:
    rng = random.Random(5)
    groups = [f"g{n}" for n in range(6)]
    held = Gathered(50, paired=paired)
    calls: list[MembershipCall] = []
    adds: dict[str, int] = {}
    for push in range(20):
        moves = []
        for person in range(rng.randrange(1, 300)):
            joined = tuple(g for g in groups if rng.random() < 0.3)
            moves.append((f"p{push}-{person}", joined, ()))
            for group in joined:
                adds[group] = adds.get(group, 0) + 1
        held.add(moves)
        calls += held.full()
    calls += held.rest()
    assert len(calls) == floor_calls(adds, {}, 50, paired=paired)
    assert all(len(c.add) == 50 for c in calls[: -len(groups)] if c.group == "g0")
    sent = {(c.group, m) for c in calls for m in c.add}
    assert len(sent) == sum(adds.values())  # each move exactly once
