"""The kit's membership planning: the fewest calls, paired or not, their floor, the guard."""

from __future__ import annotations

import random

import pytest

from connectors.kit import (
    MembershipCall,
    Move,
    floor_calls,
    members_to_add,
    minus_carried,
    owned_problem,
    plan_membership_calls,
)
from crmsync.contract import Action, Change, ConsentIntent


def moves_700_in_700_out() -> list[Move]:
    return [
        (f"p{i}", ("crm-a",) if i < 700 else (), ("crm-a",) if i >= 300 else ())
        for i in range(1000)
    ]


def test_paired_calls_carry_adds_and_removes_of_a_group_together() -> None:
    calls = plan_membership_calls(moves_700_in_700_out(), 500, paired=True)
    assert [(c.group, len(c.add), len(c.remove)) for c in calls] == [
        ("crm-a", 500, 500),
        ("crm-a", 200, 200),
    ]


def test_unpaired_calls_carry_only_adds_or_only_removes() -> None:
    calls = plan_membership_calls(moves_700_in_700_out(), 500, paired=False)
    assert [(c.group, len(c.add), len(c.remove)) for c in calls] == [
        ("crm-a", 500, 0),
        ("crm-a", 200, 0),
        ("crm-a", 0, 500),
        ("crm-a", 0, 200),
    ]


def test_calls_are_sorted_by_group_and_keep_the_moves_order() -> None:
    moves: list[Move] = [("m1", ("crm-z", "crm-b"), ()), ("m2", ("crm-b",), ("crm-z",))]
    assert plan_membership_calls(moves, 10, paired=True) == [
        MembershipCall("crm-b", ("m1", "m2"), ()),
        MembershipCall("crm-z", ("m1",), ("m2",)),
    ]
    assert plan_membership_calls([], 10, paired=False) == []


def test_a_member_listed_twice_is_sent_once() -> None:
    moves: list[Move] = [("m1", ("crm-a",), ()), ("m1", ("crm-a",), ())]
    assert plan_membership_calls(moves, 10, paired=False) == [MembershipCall("crm-a", ("m1",), ())]


@pytest.mark.parametrize("paired", [True, False])
def test_plans_reach_the_floor_and_apply_every_move_once(paired: bool) -> None:
    rng = random.Random(11)
    groups = [f"crm-g{i}" for i in range(6)]
    moves: list[Move] = []
    for i in range(5000):
        add = tuple(g for g in groups if rng.random() < 0.25)
        remove = tuple(g for g in groups if g not in add and rng.random() < 0.1)
        moves.append((f"p{i}", add, remove))
    calls = plan_membership_calls(moves, 300, paired=paired)
    adds = {g: sum(g in add for _, add, _ in moves) for g in groups}
    removes = {g: sum(g in remove for _, _, remove in moves) for g in groups}
    assert len(calls) == floor_calls(adds, removes, 300, paired=paired)
    assert all(len(c.add) <= 300 and len(c.remove) <= 300 for c in calls)
    assert all(not (c.add and c.remove) for c in calls) or paired
    sent = sorted((m, c.group, "+") for c in calls for m in c.add) + sorted(
        (m, c.group, "-") for c in calls for m in c.remove
    )
    wanted = sorted((m, g, "+") for m, add, _ in moves for g in add) + sorted(
        (m, g, "-") for m, _, remove in moves for g in remove
    )
    assert sent == wanted


def test_floors_paired_and_unpaired() -> None:
    adds, removes = {"crm-a": 700, "crm-b": 1}, {"crm-a": 700, "crm-c": 501}
    assert floor_calls(adds, removes, 500, paired=True) == 2 + 1 + 2
    assert floor_calls(adds, removes, 500, paired=False) == 4 + 1 + 2
    assert floor_calls({}, {}, 500, paired=True) == 0


def test_adds_a_create_call_carries_need_no_membership_call() -> None:
    adds = {"crm-new": 1200, "crm-small": 30, "crm-old": 30}
    carried = {"crm-new": 500, "crm-small": 30}
    assert floor_calls(adds, {}, 500, paired=True, carried=carried) == 2 + 0 + 1
    assert floor_calls(adds, {"crm-small": 1}, 500, paired=False, carried=carried) == 2 + 1 + 1


def test_carried_members_are_taken_out_of_the_moves() -> None:
    moves: list[Move] = [
        ("a", ("crm-new", "crm-old"), ()),
        ("b", ("crm-new",), ()),
        ("c", ("crm-new",), ("crm-old",)),
    ]
    assert members_to_add(moves) == {"crm-new": ["a", "b", "c"], "crm-old": ["a"]}
    left = minus_carried(moves, {"crm-new": ("a", "b")})
    assert left == [("a", ("crm-old",), ()), ("c", ("crm-new",), ("crm-old",))]
    assert plan_membership_calls(left, 500, paired=True) == [
        MembershipCall("crm-new", ("c",), ()),
        MembershipCall("crm-old", ("a",), ("c",)),
    ]


def change(add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Change:
    return Change(
        "e:a@b.co",
        Action.UPSERT,
        False,
        "a@b.co",
        None,
        {},
        add,
        remove,
        ConsentIntent.SUBSCRIBE_IF_NEW,
        ConsentIntent.LEAVE,
        "h",
    )


@pytest.mark.parametrize(
    ("add", "remove", "problem"),
    [
        (("crm-vip",), ("crm-lapsed",), None),
        ((), ("VIP by hand",), "refusing to change group 'VIP by hand'"),
        (("other",), (), "only adds or removes groups that start with its prefix 'crm-'"),
        (("",), (), "refusing"),  # empty: outside the prefix
        (("crm-" + "x" * 97,), (), "longer than 100 characters"),
        (("crm-   ",), (), None),  # within the prefix and not blank as a whole name
        (("crm-a",), ("crm-a",), "group 'crm-a' is both added and removed"),
    ],
)
def test_owned_problem_cases(
    add: tuple[str, ...], remove: tuple[str, ...], problem: str | None
) -> None:
    found = owned_problem(change(add, remove), "crm-", 100)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_owned_problem_speaks_the_vendors_word() -> None:
    found = owned_problem(change(remove=("Met at fair",)), "crm-", 100, noun="tag")
    assert found == (
        "refusing to change tag 'Met at fair': crmsync only adds or removes tags that start "
        "with its prefix 'crm-'"
    )
    assert owned_problem(change(add=("crm-" + "y" * 50,)), "crm-", 20, noun="list") == (
        "list 'crm-yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy'... is empty or longer than 20 characters"
    )
