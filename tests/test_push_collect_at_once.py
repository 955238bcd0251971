"""A destination whose ``collect`` may run on several threads (``collects_at_once``) has
that many jobs looked at side by side in a collect pass. A job that people are handed on
to after its pages were read (on another thread, or earlier in a pass one job at a time)
is looked at once more in the same pass, so nobody is left in flight on it; a
``ConnectorError`` still ends the pass. A pass takes the jobs by id as Python orders text,
the destination's ``collected_first`` before the others and its ``collected_last`` only
once every other job has been looked at."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import TransientError
from crmsync.runs import DestinationReport, RunOptions
from engine.push import Pusher, collect_order
from state.store import Store
from tests.test_push import RETRY, change, in_flight
from tests.test_push_pipelined import acknowledged

BESIDE = 5.0  # seconds a job's collect waits for another's to begin beside it


class Jobs:
    """Each push's people wait in a job named by ``jobs`` (one name per push, in order).
    ``collect`` answers OK, except where a test says otherwise: ``waits_for`` maps a job
    to the job whose collect must begin before it answers, ``hands_on`` a job to the job
    its people are handed on to (PENDING there), ``refuses`` a job Klaviyo-like down."""

    max_batch = 2

    def __init__(self, jobs: Sequence[str], at_once: int = 2) -> None:
        self.jobs = list(jobs)
        self.collects_at_once = at_once
        self.pushed = 0
        self.waits_for: dict[str, str] = {}
        self.hands_on: dict[str, str] = {}
        self.refuses: set[str] = set()
        self.begun: dict[str, threading.Event] = {job: threading.Event() for job in jobs}
        self.looked_at: list[str] = []
        self.slow: set[str] = set()  # jobs whose collect takes a while
        self.runs_until: dict[str, str] = {}  # job -> the job whose answer ends its run
        self.done: set[str] = set()  # jobs whose collect has answered
        self._lock = threading.Lock()

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        job = self.jobs[self.pushed]
        self.pushed += 1
        return [PushResult(c.person_key, Outcome.PENDING, job=job) for c in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        with self._lock:
            self.looked_at.append(job)
        self.begun[job].set()
        if job in self.refuses:
            raise TransientError(f"{job}: the vendor is unreachable")
        other = self.waits_for.get(job)
        if other is not None:
            assert self.begun[other].wait(BESIDE), f"{other} was not looked at beside {job}"
        if job in self.slow:
            time.sleep(0.3)
        until = self.runs_until.get(job)
        if until is not None and until not in self.done:
            return None
        onward = self.hands_on.get(job)
        with self._lock:
            self.done.add(job)
        if onward is not None:
            return [PushResult(c.person_key, Outcome.PENDING, job=onward) for c in changes]
        return [PushResult(c.person_key, Outcome.OK, remote_id=job) for c in changes]


def pushed(store: Store, destination: Jobs) -> tuple[Pusher, DestinationReport]:
    """A Pusher that has pushed two people per job of ``destination``, all in flight."""
    report = DestinationReport("dest", "jobs")
    pusher = Pusher("dest", destination, store, report, RunOptions(), None, RETRY)  # type: ignore[arg-type]
    for n in range(2 * len(destination.jobs)):
        pusher.add(change(n))
    pusher.flush()
    assert len(in_flight(store)) == 2 * len(destination.jobs)
    return pusher, report


def test_jobs_are_looked_at_side_by_side(state_url: str) -> None:
    store = Store(state_url)
    destination = Jobs(["job1", "job2", "job3"])
    # job1 answers only once job2's collect has begun: one job at a time, it never would
    destination.waits_for["job1"] = "job2"
    pusher, report = pushed(store, destination)
    assert pusher.collect() == 0
    assert in_flight(store) == {} and report.counts["ok"] == 6 and not report.error
    assert acknowledged(store) == {change(n).person_key for n in range(6)}
    store.close()


def test_one_at_a_time_unless_the_destination_says_so(state_url: str) -> None:
    store = Store(state_url)
    destination = Jobs(["job1", "job2"], at_once=1)
    pusher, _ = pushed(store, destination)
    assert pusher.collect() == 0
    assert destination.looked_at == ["job1", "job2"]
    store.close()


def test_an_in_memory_state_database_is_collected_one_job_at_a_time() -> None:
    """SQLite in memory exists once per connection, and each thread gets its own: its
    jobs are looked at in the pass's own thread, one after another, whatever the
    destination allows."""
    store = Store("sqlite://")
    destination = Jobs(["job1", "job2", "job3"])
    pusher, report = pushed(store, destination)
    assert pusher.collect() == 0
    assert destination.looked_at == ["job1", "job2", "job3"]
    assert in_flight(store) == {} and report.counts["ok"] == 6
    store.close()


def test_a_job_handed_people_while_it_settled_is_looked_at_again(state_url: str) -> None:
    store = Store(state_url)
    # "a" hands its people on to the run-wide job "lists", and only answers once "lists"
    # has begun on the other thread, whose pages were read before "a"'s people were
    # recorded there: without a second look they would stay in flight on it
    destination = Jobs(["a", "b", "lists"])
    destination.waits_for["a"] = "lists"
    destination.hands_on["a"] = "lists"
    pusher, report = pushed(store, destination)
    assert pusher.collect() == 0
    assert destination.looked_at.count("lists") == 2
    assert in_flight(store) == {}
    assert acknowledged(store) == {change(n).person_key for n in range(6)}
    assert report.counts["ok"] == 6 and not report.error
    store.close()


@pytest.mark.parametrize("at_once", [1, 2])
def test_a_connector_error_ends_the_pass_and_loses_nobody(state_url: str, at_once: int) -> None:
    store = Store(state_url)
    destination = Jobs(["job1", "job2", "job3", "job4"], at_once=at_once)
    destination.refuses.add("job1")
    pusher, report = pushed(store, destination)
    left = pusher.collect()
    assert report.error == "job1: the vendor is unreachable"
    waiting = {job for _, job in in_flight(store).values()}
    settled = {
        c.person_key for n in range(8) if (c := change(n)).person_key not in in_flight(store)
    }
    assert settled == acknowledged(store)  # everyone is either settled or still in flight
    assert "job1" in waiting and left == len(waiting)
    if at_once == 1:  # one at a time: nothing after the failure is begun
        assert destination.looked_at == ["job1"] and waiting == set(destination.jobs)
    store.close()


def test_a_pass_orders_jobs_as_python_orders_text_with_the_first_and_last_named() -> None:
    jobs = ["lists:run", "pZ1", "Zx", "imports:2", "01H", "imports:1"]
    # as text, "Zx" comes before "lists:" (a database's collation may say otherwise)
    assert collect_order(jobs) == ["01H", "Zx", "imports:1", "imports:2", "lists:run", "pZ1"]
    assert collect_order(jobs, ("imports:",), ("lists:",)) == [
        "imports:1",
        "imports:2",
        "01H",
        "Zx",
        "pZ1",
        "lists:run",
    ]


def test_one_at_a_time_a_job_handed_people_after_its_look_is_looked_at_again(
    state_url: str,
) -> None:
    """ "z" hands its people on to "lists", which sorts before it and was looked at
    first: a second look settles them in the same pass."""
    store = Store(state_url)
    destination = Jobs(["lists", "z"], at_once=1)
    destination.hands_on["z"] = "lists"
    pusher, report = pushed(store, destination)
    assert pusher.collect() == 0
    assert destination.looked_at == ["lists", "z", "lists"]
    assert in_flight(store) == {} and report.counts["ok"] == 4
    store.close()


@pytest.mark.parametrize("at_once", [1, 2])
def test_the_jobs_collected_last_wait_for_every_other_job_of_the_pass(
    state_url: str, at_once: int
) -> None:
    """The run-wide job ("lists:run", which sorts first) is looked at only once both
    other jobs have answered, the slow one too, and once only: their people are handed
    on to it before its look."""
    store = Store(state_url)
    destination = Jobs(["lists:run", "z1", "z2"], at_once=at_once)
    destination.collected_last = ("lists:",)  # type: ignore[attr-defined]
    destination.hands_on.update({"z1": "lists:run", "z2": "lists:run"})
    destination.slow.add("z2")
    after: list[set[str]] = []
    collect = destination.collect

    def noting(job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        if job == "lists:run":
            after.append(set(destination.done))
        return collect(job, changes)

    destination.collect = noting  # type: ignore[method-assign]
    pusher, report = pushed(store, destination)
    assert pusher.collect() == 0
    assert after == [{"z1", "z2"}]
    assert destination.looked_at[-1] == "lists:run"
    assert in_flight(store) == {} and report.counts["ok"] == 6
    store.close()


def test_the_jobs_collected_first_come_before_those_that_wait_for_them(state_url: str) -> None:
    """A job ("01", which sorts first) runs until a hold ("imports:1") has handed its
    people on to it: with the hold looked at first, both settle in one pass."""
    store = Store(state_url)
    destination = Jobs(["01", "imports:1"], at_once=1)
    destination.collected_first = ("imports:",)  # type: ignore[attr-defined]
    destination.runs_until["01"] = "imports:1"
    destination.hands_on["imports:1"] = "01"
    pusher, report = pushed(store, destination)
    naps: list[float] = []
    assert pusher.collect(wait_seconds=30, sleep=naps.append) == 0
    assert destination.looked_at == ["imports:1", "01"] and naps == []
    assert in_flight(store) == {} and report.counts["ok"] == 4
    store.close()
