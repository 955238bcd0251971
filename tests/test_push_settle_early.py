"""Settling while pushing: a destination that says so (``SettlesWhilePushing``) has its
finished jobs collected by the Pusher's collector thread while later batches still go out,
never the job it holds for the next push, and never on a Pusher that was not asked to
(workers, where the coordinator collects)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from crmsync.contract import Change, Outcome, PushResult, SettlesWhilePushing
from crmsync.errors import TransientError
from crmsync.runs import DestinationReport, RunOptions
from engine import push as push_module
from engine.push import Pusher
from state.store import Store
from tests.test_push import RETRY, change, in_flight
from tests.test_push_pipelined import WAIT, acknowledged

HELD = "held"  # the job a push's last people wait in for the next push


class Jobs:
    """Each batch goes into a job of its own (``job1``, ``job2``, ...), except the last
    batch's people, who wait in ``held`` until the final collect; a job is finished once
    the test says so. The third push waits until ``job1`` has been settled early."""

    max_batch = 2

    def __init__(self, pushes: int, early_error: bool = False) -> None:
        self.pushes, self.early_error = pushes, early_error
        self.pushed = 0
        self.finished: set[str] = set()
        self.early: list[tuple[str, int]] = []  # (job, pushes made) per early answer
        self.job1_settled = threading.Event()
        self.lock = threading.Lock()

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        with self.lock:
            self.pushed += 1
            number = self.pushed
        if number == 2:
            self.finished.add("job1")
        if number == 3:
            assert self.job1_settled.wait(WAIT), "job1 was not settled while pushing"
        job = HELD if number == self.pushes else f"job{number}"
        return [PushResult(c.person_key, Outcome.PENDING, job=job) for c in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        if job != HELD and job not in self.finished:
            return None
        return [PushResult(c.person_key, Outcome.OK, remote_id="r" + job) for c in changes]

    def collect_early(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        if self.early_error:
            raise TransientError("Klaviyo is unreachable")
        if job == HELD:
            return None
        results = self.collect(job, changes)
        if results is not None:
            self.early.append((job, self.pushed))
            if job == "job1":
                self.job1_settled.set()
        return results


def pusher_for(store: Store, destination: Jobs, settle: bool) -> tuple[Pusher, DestinationReport]:
    report = DestinationReport("dest", "jobs")
    pusher = Pusher(
        "dest",
        destination,  # type: ignore[arg-type]
        store,
        report,
        RunOptions(),
        None,
        RETRY,
        settle_while_pushing=settle,
    )
    return pusher, report


@pytest.fixture(autouse=True)
def _often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push_module, "_COLLECT_EVERY", 0.01)


def test_finished_jobs_are_settled_while_later_batches_go_out(state_url: str) -> None:
    store = Store(state_url)
    destination = Jobs(pushes=4)
    assert isinstance(destination, SettlesWhilePushing)
    pusher, report = pusher_for(store, destination, settle=True)
    for n in range(8):
        pusher.add(change(n))
    pusher.flush()
    # job1 was settled before the third push was answered (that push waited for it), so
    # while batches 3 and 4 were still to go out
    [pushes] = [n for j, n in destination.early if j == "job1"]
    assert pushes in (2, 3)
    assert {change(0).person_key, change(1).person_key} <= acknowledged(store)
    # the held people stay in flight on their job: only the final collect settles them
    held = {change(6).person_key, change(7).person_key}
    assert {k for k, (_, job) in in_flight(store).items() if job == HELD} == held
    assert all(job != HELD for job, _ in destination.early)
    destination.finished.update({"job2", "job3"})
    assert pusher.collect() == 0
    assert acknowledged(store) == {change(n).person_key for n in range(8)}
    assert in_flight(store) == {} and report.counts["ok"] == 8 and not report.error
    store.close()


def test_an_early_collect_that_fails_stops_the_passes_not_the_pushes(state_url: str) -> None:
    store = Store(state_url)
    destination = Jobs(pushes=4, early_error=True)
    destination.job1_settled.set()  # nothing is settled early: the third push goes on
    pusher, report = pusher_for(store, destination, settle=True)
    for n in range(8):
        pusher.add(change(n))
    pusher.flush()
    assert destination.pushed == 4 and report.counts["not_sent"] == 0
    assert not report.error and acknowledged(store) == set()
    destination.finished.update({"job2", "job3"})
    assert pusher.collect() == 0
    assert len(acknowledged(store)) == 8 and not report.error
    store.close()


def test_a_pusher_not_asked_to_settle_while_pushing_leaves_it_to_the_final_collect(
    state_url: str,
) -> None:
    store = Store(state_url)
    destination = Jobs(pushes=4)
    destination.job1_settled.set()
    pusher, _ = pusher_for(store, destination, settle=False)
    for n in range(8):
        pusher.add(change(n))
    pusher.flush()
    assert destination.early == [] and acknowledged(store) == set()
    store.close()


def test_settling_beside_pushes_made_elsewhere_settles_their_finished_jobs(
    state_url: str,
) -> None:
    """A run on workers: the workers' pushes (Pushers not asked to settle) leave their
    jobs in the ledger, and the coordinator's Pusher, inside ``settling``, settles the
    finished ones while later batches still go out, never the held job; on leaving, its
    passes stop and the final collect settles the rest."""
    store = Store(state_url)
    destination = Jobs(pushes=4)
    pushing, pushed = pusher_for(store, destination, settle=False)
    settling, settled = pusher_for(store, destination, settle=True)
    with settling.settling():
        for n in range(8):
            pushing.add(change(n))
        pushing.flush()  # the third push waited until job1 was settled, by the other
    [pushes] = [n for j, n in destination.early if j == "job1"]
    assert pushes in (2, 3)
    assert {change(0).person_key, change(1).person_key} <= acknowledged(store)
    assert all(job != HELD for job, _ in destination.early)
    assert settled.counts["ok"] == len(acknowledged(store)) >= 2 and pushed.counts["ok"] == 0
    seen = len(destination.early)
    destination.finished.update({"job2", "job3"})
    time.sleep(0.1)  # ten passes' time, had the passes not stopped
    assert len(destination.early) == seen and len(acknowledged(store)) < 8
    assert settling.collect() == 0
    assert acknowledged(store) == {change(n).person_key for n in range(8)}
    store.close()
