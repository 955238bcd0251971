"""Import jobs cut over a whole run (``connectors.klaviyo.run_imports``), against the strict
fake Klaviyo: a push cut in several jobs holds its last one for the next push, so a run
opens the fewest jobs that Klaviyo's two caps (profiles and bytes per job) allow.

The caps are scaled down (20 profiles and 4 KB a job) so that a few dozen people show
what 10,409 people of some 520 bytes do with Klaviyo's 10,000 profiles and 5 MB.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from connectors.http import BudgetRegistry
from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination
from connectors.klaviyo.payloads import job_bytes_available, profile_entry, size_of
from crmsync.contract import Change, ConnectorContext, Outcome, PushResult
from crmsync.runs import DestinationReport, RunOptions
from engine.push import Pusher
from state.held_moves import HeldInState
from state.store import Store
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake
from tests.test_klaviyo_destination import JOBS, NONE, allow, collect_all, person
from tests.test_push import RETRY, in_flight

__all__ = ["klaviyo_fake"]

PER_JOB, JOB_BYTES = 20, 4096  # the push batch is a job's count, as in the core
IMPORT = ("POST", JOBS)


class Moves:
    """Stands for the run's shared moves on Celery workers (only its presence matters)."""

    token = "run-7"


def make(fake: FakeKlaviyo, context: ConnectorContext | None = None) -> KlaviyoDestination:
    config = KlaviyoConfig.model_validate(
        {
            "kind": "klaviyo",
            "api_key": fake.api_key,
            "base_url": fake.base_url,
            "jobs": {"profiles_per_job": PER_JOB, "bytes_per_job": JOB_BYTES},
        }
    )
    context = context or ConnectorContext("klaviyo_test", Path("."))
    return KlaviyoDestination(config, context, budgets=BudgetRegistry())


def people(count: int, start: int = 0) -> list[Change]:
    """People of about 210 bytes a profile: 18 fill a job's bytes before its 20 profiles."""
    return [
        person(f"p{i:05d}@example.com", NONE, add=["crm-all"], fields={"note": "x" * 120})
        for i in range(start, start + count)
    ]


def fewest_jobs(changes: list[Change]) -> int:
    """What Klaviyo's caps allow at best: by count, and by the profiles' bytes."""
    total = sum(size_of(profile_entry(c)) for c in changes)
    return max(math.ceil(len(changes) / PER_JOB), math.ceil(total / job_bytes_available(JOB_BYTES)))


def run(
    dest: KlaviyoDestination, fake: FakeKlaviyo, pushes: list[list[Change]]
) -> dict[str, PushResult]:
    """Pushes the batches in turn, then collects until nobody is PENDING, as a run does."""
    everyone = [c for push in pushes for c in push]
    allow(fake, everyone)
    answers = [r for push in pushes for r in dest.push(push)]
    return collect_all(dest, everyone, answers)


def test_a_run_of_two_pushes_opens_the_fewest_jobs_the_byte_cap_allows(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    """20 people need two jobs by bytes (18 + 2), the next 12 fit beside those 2: two jobs
    for the run (cut per push it was three: 18, 2 and 12)."""
    first, second = people(20), people(12, start=20)
    assert size_of(profile_entry(first[0])) * PER_JOB > job_bytes_available(JOB_BYTES)
    dest = make(klaviyo_fake)
    try:
        allow(klaviyo_fake, [*first, *second])
        answers = dest.push(first)
        assert klaviyo_fake.calls[IMPORT] == 1
        held = {r.job for r in answers[18:]}
        assert len(held) == 1 and all(j and j.startswith("imports:") for j in held)
        answers += dest.push(second)
        final = collect_all(dest, [*first, *second], answers)
    finally:
        dest.close()
    assert klaviyo_fake.calls[IMPORT] == fewest_jobs([*first, *second]) == 2
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    for change in [*first, *second]:
        profile = klaviyo_fake.profile(change.email or "")
        assert profile is not None and final[change.person_key].remote_id == profile.id
    assert len(klaviyo_fake.members("crm-all")) == 32
    assert klaviyo_fake.calls[("POST", "/api/lists/{id}/relationships/profiles")] == 1


def test_collected_while_pushing_the_hold_and_the_list_job_wait_and_jobs_settle(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    """``collect_early`` between pushes: the hold and the run's list job are left for the
    final collect (the next push fills the hold, later moves join the list calls); a
    finished job settles as ``collect`` would, and the run still opens the fewest jobs
    and makes one list call."""
    first, second = people(20), people(12, start=20)
    dest = make(klaviyo_fake)
    try:
        allow(klaviyo_fake, [*first, *second])
        answers = {r.person_key: r for r in dest.push(first)}
        [job] = {answers[c.person_key].job for c in first[:18]}
        [hold] = {answers[c.person_key].job for c in first[18:]}
        assert job is not None and hold is not None and hold.startswith("imports:")
        assert dest.collect_early(hold, first[18:]) is None  # held for the next push
        klaviyo_fake.finish_jobs()
        early = dest.collect_early(job, first[:18])
        assert early is not None
        # settled: their list moves wait in the run's list job, which waits too
        assert {r.job for r in early} == {dest._run_lists.job}
        assert dest.collect_early(dest._run_lists.job, first[:18]) is None
        answers.update((r.person_key, r) for r in early)
        answers.update((r.person_key, r) for r in dest.push(second))
        final = collect_all(dest, [*first, *second], list(answers.values()))
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.calls[IMPORT] == fewest_jobs([*first, *second]) == 2
    assert len(klaviyo_fake.members("crm-all")) == 32
    assert klaviyo_fake.calls[("POST", "/api/lists/{id}/relationships/profiles")] == 1


def test_many_full_pushes_are_cut_as_one_stream(klaviyo_fake: FakeKlaviyo) -> None:
    """Five pushes of 20 and a short one: every remainder rides in the next push's first
    job, and the last is sent when the run collects its hold."""
    everyone = people(105)
    pushes = [everyone[start : start + PER_JOB] for start in range(0, 105, PER_JOB)]
    dest = make(klaviyo_fake)
    try:
        final = run(dest, klaviyo_fake, pushes)
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.calls[IMPORT] == fewest_jobs(everyone) == 6  # per push: 11


def test_a_hold_nothing_took_is_sent_when_the_run_collects_it(klaviyo_fake: FakeKlaviyo) -> None:
    """The run's last push was cut in two: its remainder goes out at the end, and a later
    push of the next run does not wait for it."""
    everyone = people(20)
    dest = make(klaviyo_fake)
    try:
        final = run(dest, klaviyo_fake, [everyone])
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.calls[IMPORT] == 2
    assert len(klaviyo_fake.members("crm-all")) == 20


def test_an_earlier_runs_hold_is_rebuilt_from_its_changes(klaviyo_fake: FakeKlaviyo) -> None:
    """A run that stopped before collecting its hold: the next run's destination never
    held those people, so their profiles are rebuilt from the changes and imported."""
    everyone = people(20)
    allow(klaviyo_fake, everyone)
    earlier = make(klaviyo_fake)
    try:
        answers = earlier.push(everyone)
    finally:
        earlier.close()
    held = [c for c, r in zip(everyone, answers, strict=True) if r.job and "imports:" in r.job]
    assert len(held) == 2 and klaviyo_fake.profile(held[0].email or "") is None
    dest = make(klaviyo_fake)
    try:
        final = collect_all(dest, held, [r for r in answers if r.job and "imports:" in r.job])
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert all(klaviyo_fake.profile(c.email or "") is not None for c in held)


def test_a_held_person_sharing_an_email_with_the_next_push_is_sent_apart(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    """Two people with one address in one job would become one profile: the held job goes
    alone rather than take the other in."""
    first = people(20)
    twin = replace(first[19], person_key="other-key", fields={"note": "twin"})
    dest = make(klaviyo_fake)
    try:
        final = run(dest, klaviyo_fake, [first, [twin, *people(11, start=20)]])
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.calls[IMPORT] == 3  # 18, the 2 held, then the twin and 11


def test_on_workers_nothing_is_held(klaviyo_fake: FakeKlaviyo) -> None:
    """Another process collects a run on workers and could not know a hold sent later:
    each push's jobs go out at once, as before."""
    context = ConnectorContext("klaviyo_test", Path("."), moves=Moves())  # type: ignore[arg-type]
    dest = make(klaviyo_fake, context)
    try:
        allow(klaviyo_fake, people(20))
        answers = dest.push(people(20))
    finally:
        dest.close()
    assert klaviyo_fake.calls[IMPORT] == 2
    assert not any(r.job and r.job.startswith("imports:") for r in answers)


def test_on_workers_the_list_job_waits_for_jobs_running_not_for_jobs_settled_elsewhere(
    klaviyo_fake: FakeKlaviyo, tmp_path: Path
) -> None:
    """A worker pushed two jobs; the coordinator (another instance of the run, sharing
    its moves) settles them while the worker's collect looks too. The run's list job
    waits while the worker's pass finds one of them running, and no longer once the
    coordinator has settled it, though the worker never saw it finish: every move then
    goes out in one list call."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    moves = HeldInState(store.engine, 7, "klaviyo_test")
    worker = make(klaviyo_fake, ConnectorContext("klaviyo_test", Path("."), moves=moves))
    coordinator = make(klaviyo_fake, ConnectorContext("klaviyo_test", Path("."), moves=moves))
    everyone = people(20)
    try:
        allow(klaviyo_fake, everyone)
        answers = {r.person_key: r for r in worker.push(everyone)}
        [big] = {answers[c.person_key].job for c in everyone[:18]}
        [small] = {answers[c.person_key].job for c in everyone[18:]}
        assert big is not None and small is not None and big != small
        # the coordinator settles the small job (processing at its first look)
        assert coordinator.collect_early(small, everyone[18:]) is None
        settled = coordinator.collect_early(small, everyone[18:])
        assert settled is not None
        lists = worker._run_lists.job
        assert {r.job for r in settled} == {lists} == {coordinator._run_lists.job}
        waiting = _with_ids(everyone[18:], settled)
        # the worker's pass: the big job still runs, so the list job waits
        assert worker.collect(big, everyone[:18]) is None
        assert worker.collect(lists, waiting) is None
        # the coordinator settles the big job; the worker's next pass does not meet it
        late = coordinator.collect_early(big, everyone[:18])
        assert late is not None and {r.job for r in late} == {lists}
        waiting += _with_ids(everyone[:18], late)
        final = worker.collect(lists, waiting)
    finally:
        worker.close()
        coordinator.close()
        store.close()
    assert final is not None and {r.outcome for r in final} == {Outcome.OK}
    assert len(klaviyo_fake.members("crm-all")) == 20
    assert klaviyo_fake.calls[("POST", "/api/lists/{id}/relationships/profiles")] == 1


@pytest.mark.parametrize("prefix", ["", "z"])
def test_on_workers_the_list_job_is_collected_after_the_import_jobs_whatever_their_ids(
    klaviyo_fake: FakeKlaviyo, tmp_path: Path, prefix: str
) -> None:
    """The core collects, two jobs at a time (``collects_at_once``), a run's import jobs
    on workers: one settled while the run pushed handed its people's moves on to the
    run's list job, the other completes later. Whatever ids Klaviyo gives its jobs (with
    "z" they sort after ``lists:``), the last pass looks at the list job only once the
    other import job has been settled (``collected_last``): every move goes out in one
    list call, and nobody is left in flight."""
    klaviyo_fake.job_id_prefix = prefix
    klaviyo_fake.job_polls_until_complete = None  # complete when the test says
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    moves = HeldInState(store.engine, 7, "klaviyo_test")
    dest = make(klaviyo_fake, ConnectorContext("klaviyo_test", Path("."), moves=moves))
    report = DestinationReport("klaviyo_test", "klaviyo")
    pusher = Pusher("klaviyo_test", dest, store, report, RunOptions(), None, RETRY)
    everyone = people(20)
    try:
        allow(klaviyo_fake, everyone)
        for change in everyone:
            pusher.add(change)
        pusher.flush()
        waiting = {key: job for key, (_, job) in in_flight(store).items()}
        jobs = {job: sum(1 for j in waiting.values() if j == job) for job in waiting.values()}
        assert sorted(jobs.values()) == [2, 18]
        assert all(job is not None and job.startswith(prefix) for job in jobs)
        small = next(job for job, count in jobs.items() if count == 2)
        big = next(job for job, count in jobs.items() if count == 18)
        klaviyo_fake.finish_job(small)
        # the big job runs on; the small one's people wait on the list job
        assert pusher.collect(early=True) == 2
        lists = dest._run_lists.job
        assert {job for _, job in in_flight(store).values()} == {big, lists}
        assert (lists > big) is (prefix == "")  # "z...": the list job's id sorts first
        klaviyo_fake.finish_job(big)
        assert pusher.collect() == 0
    finally:
        dest.close()
        store.close()
    assert report.counts["ok"] == 20 and not report.error
    assert len(klaviyo_fake.members("crm-all")) == 20
    assert klaviyo_fake.calls[("POST", "/api/lists/{id}/relationships/profiles")] == 1


def _with_ids(changes: list[Change], results: list[PushResult]) -> list[Change]:
    """The changes as the ledger hands them on: with the profile id a PENDING result kept."""
    return [replace(c, remote_id=r.remote_id) for c, r in zip(changes, results, strict=True)]
