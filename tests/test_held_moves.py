"""A run's membership moves held in the state database (``state.held_moves``), shared by
the processes that push the run (``connectors.kit.run_moves`` with ``SharedMoves``).

Two holders on one run and destination stand for two workers: together they make the
calls one process makes (the per-run floor), each move goes out once, whichever holder
collects the run's job sends what is left and answers with the failures the other kept,
and a worker killed between taking a call and sending it loses nothing. Threads push at
once and never take the same move twice. On PostgreSQL (the workers' database) and on
SQLite.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from connectors.kit.memberships import MembershipCall, Move
from connectors.kit.run_moves import RunMoves, Sent
from state.held_moves import HeldInState
from state.store import Store
from state.work_queue import forget_run, held_moves

BATCH = 5


@pytest.fixture(params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('held') / 'state.db'}"
    store = Store(url)
    yield store
    store.close()


class Vendor:
    """Records every membership call; members in ``refuse`` fail."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.calls: list[MembershipCall] = []
        self.refuse = set(refuse)
        self.lock = threading.Lock()

    def send(self, calls: Sequence[MembershipCall]) -> Sent:
        with self.lock:
            self.calls.extend(calls)
        failed = {m: "refused" for c in calls for m in c.members() if m in self.refuse}
        return failed, [None] * len(calls)

    def applied(self) -> Counter[tuple[str, str, str]]:
        moves: Counter[tuple[str, str, str]] = Counter()
        for call in self.calls:
            moves.update((call.group, "+", m) for m in call.add)
            moves.update((call.group, "-", m) for m in call.remove)
        return moves


def _run(store: Store) -> int:
    return store.start_run("main", "manual", datetime(2026, 11, 1, tzinfo=UTC))


def _moves(count: int) -> list[Move]:
    """People joining "vip" (everyone), "loyal" (every third) and leaving "new" (every
    other one)."""
    found: list[Move] = []
    for i in range(count):
        add = ["vip"] + (["loyal"] if i % 3 == 0 else [])
        remove = ["new"] if i % 2 == 0 else []
        found.append((f"m{i:03d}", add, remove))
    return found


def _holder(store: Store, run: int, vendor: Vendor, *, paired: bool = True) -> RunMoves:
    shared = HeldInState(store.engine, run, "out")
    return RunMoves(vendor.send, BATCH, paired=paired, prefix="tags:", noun="tag", shared=shared)


@pytest.mark.parametrize("paired", [True, False])
def test_two_holders_make_the_calls_of_one_process(store: Store, paired: bool) -> None:
    moves = _moves(23)
    alone = Vendor()
    one = RunMoves(alone.send, BATCH, paired=paired, prefix="tags:", noun="tag")
    for start in range(0, len(moves), 4):
        one.hold(moves[start : start + 4])
    one.finish(one.job)

    run = _run(store)
    vendor = Vendor()
    first, second = (
        _holder(store, run, vendor, paired=paired),
        _holder(store, run, vendor, paired=paired),
    )
    assert first.job == second.job == f"tags:run{run}"  # one job for the run
    pending: set[str] = set()
    for number, start in enumerate(range(0, len(moves), 4)):
        holder = (first, second)[number % 2]
        held = holder.hold(moves[start : start + 4])
        pending |= held.waiting
    failed, _ = second.finish(first.job)

    assert failed == {}
    assert len(vendor.calls) == len(alone.calls)  # the floor, not one remainder per holder
    assert vendor.applied() == alone.applied()  # every move once
    assert all(count == 1 for count in vendor.applied().values())
    assert pending  # some people waited for the run's end
    with store.engine.connect() as conn:
        assert conn.execute(held_moves.select()).first() is None  # nothing left held


def test_failures_kept_by_one_holder_answer_at_the_others_collect(store: Store) -> None:
    run = _run(store)
    vendor = Vendor(refuse=["m001"])
    first, second = _holder(store, run, vendor), _holder(store, run, vendor)
    held = first.hold([("m001", ["vip"], [])])
    assert held.waiting == {"m001"}  # answered PENDING: its call is not full
    # the other worker's batch fills the call: m001's move is sent there, and refused
    second.hold([(f"m{i:03d}", ["vip"], []) for i in range(2, 2 + BATCH - 1)])
    assert len(vendor.calls) == 1
    failed, _ = first.finish(first.job)
    assert failed == {"m001": "refused"}


def test_a_call_taken_by_a_killed_worker_is_sent_at_the_collect(store: Store) -> None:
    run = _run(store)
    vendor = Vendor()
    shared = HeldInState(store.engine, run, "out")
    # a worker took a full call and died before sending it: its moves stay marked
    taken = shared.exchange([("vip", "+", f"m{i}") for i in range(BATCH)], lambda held: held)
    assert len(taken) == BATCH
    survivor = _holder(store, run, vendor)
    survivor.hold([("m9", ["vip"], [])])  # not full: the marked moves are not its to send
    assert vendor.calls == []
    survivor.finish(survivor.job)
    assert sorted(vendor.applied()) == sorted(
        [("vip", "+", f"m{i}") for i in range(BATCH)] + [("vip", "+", "m9")]
    )


def test_holders_pushing_at_once_never_send_a_move_twice(postgres_url: str) -> None:
    """On PostgreSQL, the workers' database (SQLite has one writer at a time)."""
    store = Store(postgres_url)
    try:
        _push_at_once(store)
    finally:
        store.close()


def _push_at_once(store: Store) -> None:
    run = _run(store)
    vendor = Vendor()
    moves = _moves(200)
    holders = [_holder(store, run, vendor) for _ in range(4)]
    errors: list[BaseException] = []

    def push(number: int) -> None:
        try:
            for start in range(number * 4, len(moves), 16):
                holders[number].hold(moves[start : start + 4])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=push, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    holders[0].finish(holders[0].job)
    assert errors == []
    expected = Vendor()
    expected.send(
        [MembershipCall(g, (m,), ()) for m, add, _ in moves for g in add]
        + [MembershipCall(g, (), (m,)) for m, _, remove in moves for g in remove]
    )
    assert vendor.applied() == expected.applied()  # every move exactly once
    assert max(vendor.applied().values()) == 1


def test_the_run_end_forgets_its_held_moves(store: Store) -> None:
    run = _run(store)
    vendor = Vendor(refuse=["m1"])
    holder = _holder(store, run, vendor)
    holder.hold([("m1", ["vip"], [])])
    HeldInState(store.engine, run, "out").fail({"m1": "refused"})
    store.finish_run(run, "failed", {})
    with store.transaction() as conn:
        forget_run(conn, run)
    assert HeldInState(store.engine, run, "out").failures() == {}
    with store.engine.connect() as conn:
        assert conn.execute(held_moves.select()).first() is None


ODD = ["a,b@x.com", 'quote"d@x.com', "{brace}@x.com", "back\\slash@x.com", "NULL", "çığ@x.com"]


def test_ids_of_any_text_are_held_and_sent_as_they_came(store: Store) -> None:
    """Member and group ids that an array literal would have to quote, and one holding
    the separator the server splits a list on (sent as an array instead), come back
    exactly; a batch held again (pushed again after its worker died) is held once."""
    run = _run(store)
    vendor = Vendor()
    holder = _holder(store, run, vendor)
    moves: list[Move] = [(member, ['vip, "gold"'], ["new\x1fold"]) for member in ODD[:2]]
    holder.hold(moves)
    holder.hold(moves)  # the same batch again: nothing doubles
    with store.engine.connect() as conn:
        assert len(conn.execute(held_moves.select()).all()) == 4
    holder.hold([(member, ['vip, "gold"'], []) for member in ODD[2:]])  # fills a call
    holder.finish(holder.job)

    expected = [('vip, "gold"', "+", member) for member in ODD]
    expected += [("new\x1fold", "-", member) for member in ODD[:2]]
    assert sorted(vendor.applied().elements()) == sorted(expected)
    with store.engine.connect() as conn:
        assert conn.execute(held_moves.select()).first() is None
