"""The Klaviyo destination against the strict fake: jobs, lists, consent, deletions, checks.

The fake validates every request against Klaviyo's OpenAPI specs and, on teardown, fails
the test for any spec violation and for anybody subscribed without consent or
re-subscribed after opting out.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.http import BudgetRegistry
from connectors.kit import floor_calls
from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination, readback
from crmsync.contract import (
    Action,
    Change,
    ConnectorContext,
    ConsentIntent,
    Destination,
    Outcome,
    PushResult,
)
from crmsync.records import Channel, ConsentState
from tests.e2e import consented, make_site
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake

__all__ = ["klaviyo_fake"]

SUB, UNSUB, NONE = ConsentIntent.SUBSCRIBE_IF_NEW, ConsentIntent.UNSUBSCRIBE, ConsentIntent.LEAVE
CONTEXT = ConnectorContext("klaviyo_test", Path("."))
JOBS = "/api/profile-bulk-import-jobs"
SUBSCRIBE = ("POST", "/api/profile-subscription-bulk-create-jobs")
UNSUBSCRIBE = ("POST", "/api/profile-subscription-bulk-delete-jobs")
ADD = ("POST", "/api/lists/{id}/relationships/profiles")
REMOVE = ("DELETE", "/api/lists/{id}/relationships/profiles")
SUPPRESS = ("POST", "/api/profile-suppression-bulk-create-jobs")


def person(
    email: str | None,
    consent: ConsentIntent = SUB,
    *,
    phone: str | None = None,
    sms: ConsentIntent = NONE,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    fields: dict[str, Any] | None = None,
    is_new: bool = True,
    action: Action = Action.UPSERT,
    remote_id: str | None = None,
    consent_at: datetime | None = None,
) -> Change:
    memberships = tuple(sorted(add))
    return Change(
        person_key=f"e:{email}" if email else f"p:{phone}",
        action=action,
        is_new=is_new,
        email=email,
        phone=phone,
        fields={"first_name": "Ayşe", "orders_count": 3} if fields is None else fields,
        memberships_add=tuple(add),
        memberships_remove=tuple(remove),
        email_intent=consent,
        sms_intent=sms,
        payload_hash="h",
        remote_id=remote_id,
        memberships=memberships,
        email_consent_at=consent_at,
        sms_consent_at=consent_at,
    )


def crowd(count: int, consent: ConsentIntent = SUB, **kw: Any) -> list[Change]:
    return [person(f"p{i:05d}@example.com", consent, **kw) for i in range(count)]


def make(fake: FakeKlaviyo, **overrides: Any) -> KlaviyoDestination:
    config = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": fake.api_key, "base_url": fake.base_url, **overrides}
    )
    return KlaviyoDestination(config, CONTEXT, budgets=BudgetRegistry())


@pytest.fixture
def dest(klaviyo_fake: FakeKlaviyo) -> Iterator[KlaviyoDestination]:
    destination = make(klaviyo_fake)
    yield destination
    destination.close()


def allow(fake: FakeKlaviyo, changes: Sequence[Change]) -> None:
    """Declares who may end up subscribed: those whose recorded consent says so."""
    known = fake.consented_emails or set()
    phones = fake.consented_phones
    fake.expect_consented(
        known | {c.email for c in changes if c.email and c.email_intent is SUB},
        phones | {c.phone for c in changes if c.phone and c.sms_intent is SUB},
    )


def settle(
    fake: FakeKlaviyo, dest: KlaviyoDestination, changes: Sequence[Change]
) -> dict[str, PushResult]:
    """push, then collect every job until it is done, as the core does at the end of a run
    (a job settled can leave people PENDING on the run's list job); one final result per
    person."""
    allow(fake, changes)
    pushed = dest.push(changes)
    assert sorted(r.person_key for r in pushed) == sorted(c.person_key for c in changes)
    return collect_all(dest, changes, pushed)


def collect_all(
    dest: KlaviyoDestination, changes: Sequence[Change], answers: Sequence[PushResult]
) -> dict[str, PushResult]:
    """Collects every pending job in rounds, like the core, until nobody is PENDING."""
    by_key = {c.person_key: c for c in changes}
    final = {r.person_key: r for r in answers}
    for _ in range(20):
        jobs: dict[str, list[Change]] = {}
        for result in final.values():
            if result.outcome is Outcome.PENDING:
                assert result.job
                # the ledger keeps a pending result's remote id with the change
                change = by_key[result.person_key]
                if result.remote_id:
                    change = replace(change, remote_id=result.remote_id)
                jobs.setdefault(result.job, []).append(change)
        if not jobs:
            return final
        for job, members in sorted(jobs.items()):
            collected = dest.collect(job, members)
            if collected is None:
                continue
            assert sorted(r.person_key for r in collected) == sorted(c.person_key for c in members)
            final.update((r.person_key, r) for r in collected)
    raise AssertionError(f"jobs never completed: {sorted(jobs)}")


def test_it_is_a_destination_registered_as_klaviyo(dest: KlaviyoDestination) -> None:
    assert isinstance(dest, Destination)
    assert dest.kind == "klaviyo" and dest.config_model is KlaviyoConfig
    assert dest.max_batch == 10_000


def test_a_bulk_push_is_pending_until_the_job_completes_then_ok_with_profile_ids(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    people = crowd(12, add=["crm-vip"])
    allow(klaviyo_fake, people)
    pushed = dest.push(people)
    assert {r.outcome for r in pushed} == {Outcome.PENDING}
    assert len({r.job for r in pushed}) == 1
    job = pushed[0].job
    assert job is not None
    assert dest.collect(job, people) is None  # processing
    assert klaviyo_fake.lists_named("crm-vip") == []  # nothing applied before the job is done
    collected = dest.collect(job, people)
    assert collected is not None
    # twelve list adds do not fill a call: held for the end of the run, on its list job
    assert {r.outcome for r in collected} == {Outcome.PENDING}
    assert {r.job for r in collected} == {dest._run_lists.job}
    assert klaviyo_fake.lists_named("crm-vip") == []  # not even made yet
    final = collect_all(dest, people, collected)
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    for result in final.values():
        profile = klaviyo_fake.profile(result.person_key[2:])
        assert profile is not None and result.remote_id == profile.id
        assert profile.first_name == "Ayşe" and profile.properties == {"orders_count": 3}
    assert klaviyo_fake.members("crm-vip") == {c.email for c in people}
    assert klaviyo_fake.calls[ADD] == 1
    assert set(klaviyo_fake.subscriptions().values()) == {"SUBSCRIBED"}


def test_a_complete_jobs_people_are_looked_up_by_address_100_a_call_in_the_profiles_group(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """Not through the job's own ``/profiles`` pages (import jobs group, 150 a minute):
    ``any(email,[...])`` on ``GET /api/profiles`` (profiles group, 750 a minute), the
    phone-only people by number, whoever Klaviyo did not import FAILED for the next run."""
    people = [
        *crowd(230, add=["crm-vip"]),
        person(None, NONE, phone="+905321112233", sms=NONE),
        person(None, NONE, phone="+905321112244", sms=NONE),
    ]
    allow(klaviyo_fake, people)
    final = settle(klaviyo_fake, dest, people)
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.calls[("GET", "/api/profiles")] == 3 + 1  # 100, 100, 30; two phones
    assert klaviyo_fake.calls[("GET", "/api/profile-bulk-import-jobs/{id}/profiles")] == 0
    phone_only = klaviyo_fake.profile_by_phone("+905321112233")
    assert phone_only is not None and final["p:+905321112233"].remote_id == phone_only.id
    assert len(klaviyo_fake.members("crm-vip")) == 230
    # a profile gone from Klaviyo between the import and the lookup: no answer, retried
    lost = [person(f"late{i}@example.com") for i in range(12)]
    allow(klaviyo_fake, lost)
    pushed = dest.push(lost)
    job = pushed[0].job
    assert job is not None and dest.collect(job, lost) is None  # still processing
    klaviyo_fake.finish_jobs()
    klaviyo_fake.delete_profile("late0@example.com")
    answered = {r.person_key: r for r in dest.collect(job, lost) or []}
    assert answered[lost[0].person_key].outcome is Outcome.FAILED
    assert "gave no answer" in answered[lost[0].person_key].message
    assert {answered[c.person_key].outcome for c in lost[1:]} == {Outcome.OK}


def test_a_handful_of_changes_is_imported_one_by_one_and_answered_at_once(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """Final at once, apart from list moves held for fuller calls: PENDING on the list job."""
    people = [*crowd(3, add=["crm-new"]), person("plain@example.com")]
    allow(klaviyo_fake, people)
    results = dest.push(people)
    assert [r.outcome for r in results] == [Outcome.PENDING] * 3 + [Outcome.OK]
    assert {r.job for r in results[:3]} == {dest._run_lists.job}
    assert klaviyo_fake.calls[("POST", "/api/profile-import")] == 4
    assert klaviyo_fake.calls[("POST", JOBS)] == 0
    final = collect_all(dest, people, results)
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert klaviyo_fake.members("crm-new") == {c.email for c in people[:3]}
    assert klaviyo_fake.calls[SUBSCRIBE] == 1  # the three new people in one job


def test_import_errors_become_per_person_rejections_and_the_rest_is_ok(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.add_profile("taken@example.com")
    klaviyo_fake.add_profile(phone_number="+905321112233")
    people = [
        *crowd(10),
        person("not-an-address", add=["crm-a"]),
        # e-mail and phone on two different profiles: Klaviyo's 409 duplicate_profile
        person("taken@example.com", NONE, phone="+905321112233", fields={}),
    ]
    results = settle(klaviyo_fake, dest, people)
    assert results["e:not-an-address"].outcome is Outcome.REJECTED
    assert "Invalid email" in results["e:not-an-address"].message
    duplicate = results["e:taken@example.com"]
    assert duplicate.outcome is Outcome.REJECTED and "already exists" in duplicate.message
    assert all(results[c.person_key].outcome is Outcome.OK for c in people[:10])
    assert klaviyo_fake.lists_named("crm-a") == []  # the rejected person's list never made


def test_a_duplicate_profile_conflict_in_a_single_import_is_rejected_not_retried(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.add_profile("taken@example.com")
    klaviyo_fake.add_profile(phone_number="+905321112233")
    [result] = dest.push([person("taken@example.com", NONE, phone="+905321112233", fields={})])
    assert result.outcome is Outcome.REJECTED
    assert "duplicate_profile" in result.message
    assert klaviyo_fake.calls[("POST", "/api/profile-import")] == 1


def test_a_new_person_with_an_opt_in_is_subscribed_with_the_consent_time_in_backfills(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    dest = make(klaviyo_fake, historical_import=True)
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    try:
        settle(klaviyo_fake, dest, [person("new@example.com", consent_at=at)])
    finally:
        dest.close()
    profile = klaviyo_fake.profile("new@example.com")
    assert profile is not None
    assert profile.email_marketing.consent == "SUBSCRIBED"
    assert profile.email_marketing.consent_timestamp == at


def test_an_existing_unsubscribed_profile_is_never_subscribed_again(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.add_profile("gone@example.com", email_consent="SUBSCRIBED")
    klaviyo_fake.unsubscribe("gone@example.com")
    klaviyo_fake.add_profile("bounced@example.com")
    klaviyo_fake.suppress("bounced@example.com")
    klaviyo_fake.add_profile("quiet@example.com")  # known to Klaviyo, never subscribed
    people = [
        person("gone@example.com"),
        person("bounced@example.com"),
        person("quiet@example.com"),
        *crowd(10, NONE),
    ]
    results = settle(klaviyo_fake, dest, people)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    consent = klaviyo_fake.subscriptions()
    assert consent["gone@example.com"] == "UNSUBSCRIBED"
    assert consent["quiet@example.com"] == "NEVER_SUBSCRIBED"
    assert klaviyo_fake.suppressions("bounced@example.com") == ["HARD_BOUNCE"]
    assert klaviyo_fake.calls[SUBSCRIBE] == 0


def test_a_person_acknowledged_before_is_not_new_even_when_klaviyo_lost_the_profile(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    settle(klaviyo_fake, dest, [person("back@example.com", is_new=False)])
    assert klaviyo_fake.subscriptions()["back@example.com"] == "NEVER_SUBSCRIBED"


def test_unsubscribe_reaches_existing_profiles_and_leave_does_nothing(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.add_profile("out@example.com", email_consent="SUBSCRIBED")
    klaviyo_fake.add_profile("stay@example.com", email_consent="SUBSCRIBED")
    klaviyo_fake.expect_consented(["stay@example.com"])
    results = settle(
        klaviyo_fake,
        dest,
        [person("out@example.com", UNSUB, is_new=False), person("stay@example.com", NONE)],
    )
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    consent = klaviyo_fake.subscriptions()
    assert consent == {"out@example.com": "UNSUBSCRIBED", "stay@example.com": "SUBSCRIBED"}
    assert klaviyo_fake.calls[UNSUBSCRIBE] == 1 and klaviyo_fake.calls[SUBSCRIBE] == 0


def test_sms_consent_is_managed_only_when_enabled_and_with_a_phone(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    people = [
        person("texts@example.com", phone="+905321234567", sms=SUB),
        person("nophone@example.com", sms=SUB),
    ]
    for sms in (False, True):
        dest = make(klaviyo_fake, sms=sms)
        try:
            settle(klaviyo_fake, dest, people)
        finally:
            dest.close()
        expected = "SUBSCRIBED" if sms else "NEVER_SUBSCRIBED"
        assert klaviyo_fake.subscriptions("sms")["texts@example.com"] == expected
        klaviyo_fake.profiles.clear()
        klaviyo_fake._by_email.clear()
        klaviyo_fake._by_phone.clear()


def test_list_moves_add_and_remove_with_at_most_1000_ids_per_call(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    # reading 1,200 profiles back takes 12 pages of the job; at Klaviyo's 10/s they would
    # take seconds, so this test raises that one limit on both sides
    fast = {"burst": 100, "steady": 6000}
    klaviyo_fake.set_rate_limit("GET", f"{JOBS}/{{id}}/profiles", burst=100, steady=6000)
    dest = make(klaviyo_fake, rate_limits={"import_jobs": fast})
    try:
        moves_in_bulk(klaviyo_fake, dest)
    finally:
        dest.close()


def moves_in_bulk(klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination) -> None:
    people = crowd(1200, NONE, add=["crm-big"])
    settle(klaviyo_fake, dest, people)
    assert len(klaviyo_fake.members("crm-big")) == 1200
    assert klaviyo_fake.calls[ADD] == 2  # 1,000 + 200
    klaviyo_fake.reset_counters()
    leaving = [person(c.email, NONE, remove=["crm-big"], is_new=False) for c in people[:1100]]
    settle(klaviyo_fake, dest, leaving)
    assert len(klaviyo_fake.members("crm-big")) == 100
    assert klaviyo_fake.calls[REMOVE] == 2
    assert klaviyo_fake.calls[("POST", "/api/lists")] == 0  # found by name, not made again


def test_list_calls_of_a_run_of_several_pushes_are_the_per_run_floor(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    """Three pushes of 600: each job alone would pay a part-filled call per list (6 calls);
    gathered over the run, full calls go out as they fill and one remainder per list at
    the end (3, the floor)."""
    klaviyo_fake.set_rate_limit("GET", f"{JOBS}/{{id}}/profiles", burst=100, steady=6000)
    dest = make(klaviyo_fake, rate_limits={"import_jobs": {"burst": 100, "steady": 6000}})
    people = [
        person(f"p{i:05d}@example.com", NONE, add=["crm-a", "crm-b"] if i % 2 else ["crm-a"])
        for i in range(1800)
    ]
    pushes = [people[start : start + 600] for start in range(0, 1800, 600)]
    try:
        answers = [r for push in pushes for r in dest.push(push)]
        final = collect_all(dest, people, answers)
    finally:
        dest.close()
    assert {r.outcome for r in final.values()} == {Outcome.OK}
    assert len(klaviyo_fake.members("crm-a")) == 1800
    assert len(klaviyo_fake.members("crm-b")) == 900
    floor = floor_calls({"crm-a": 1800, "crm-b": 900}, {}, 1000, paired=False)
    per_job = sum(floor_calls({"crm-a": 600, "crm-b": 300}, {}, 1000, paired=False) for _ in pushes)
    assert klaviyo_fake.calls[ADD] == floor == 3 < per_job == 6


def test_a_held_list_call_that_fails_fails_its_people_and_only_them(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    people = [*crowd(12, NONE, add=["crm-vip"]), person("plain@example.com", NONE)]
    allow(klaviyo_fake, people)
    pushed = dest.push(people)
    [job] = {r.job for r in pushed}
    assert job is not None
    collected = None
    while collected is None:
        collected = dest.collect(job, people)
    by_key = {r.person_key: r for r in collected}
    assert by_key["e:plain@example.com"].outcome is Outcome.OK
    assert {by_key[c.person_key].outcome for c in people[:12]} == {Outcome.PENDING}
    klaviyo_fake.inject(409, method="POST", path="/api/lists/*/relationships/profiles")
    final = collect_all(dest, people, collected)
    assert final["e:plain@example.com"].outcome is Outcome.OK
    for change in people[:12]:
        result = final[change.person_key]
        assert result.outcome is Outcome.FAILED and "crm-vip" in result.message
        assert result.remote_id == klaviyo_fake.profile(change.email or "").id  # type: ignore[union-attr]


def test_a_crashed_runs_list_job_is_rebuilt_from_its_changes(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """People left PENDING on an earlier run's list job: their moves are sent again from
    the changes (by the profile id kept with them, else found by e-mail)."""
    people = crowd(3, NONE, add=["crm-back"])
    allow(klaviyo_fake, people)
    earlier = make(klaviyo_fake)
    try:
        pushed = earlier.push(people)  # single imports: moves held, never sent
    finally:
        earlier.close()
    assert {r.outcome for r in pushed} == {Outcome.PENDING}
    [job] = {r.job for r in pushed}
    assert job is not None and job != dest._run_lists.job
    waiting = [replace(people[0], remote_id=pushed[0].remote_id), *people[1:]]
    results = dest.collect(job, waiting)
    assert results is not None and {r.outcome for r in results} == {Outcome.OK}
    assert klaviyo_fake.members("crm-back") == {c.email for c in people}
    assert [r.remote_id for r in results] == [r.remote_id for r in pushed]


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_list_refused_for_the_daily_cap_fails_its_people_with_the_reason(
    klaviyo_fake: FakeKlaviyo, concurrency: int
) -> None:
    """Sequential creates learn of the cap from the last allowed create's RateLimit headers
    (no wait, no call); parallel ones from the 429. Either way the run goes on."""
    klaviyo_fake.set_rate_limit("POST", "/api/lists", daily=1)
    dest = make(klaviyo_fake, http={"rate": {"max_concurrency": concurrency}})
    people = [
        person("a@example.com", NONE, add=["crm-one"]),
        person("b@example.com", NONE, add=["crm-two"]),
    ]
    try:
        results = settle(klaviyo_fake, dest, people)
    finally:
        dest.close()
    outcomes = sorted((r.outcome, r.message) for r in results.values())
    assert [o for o, _ in outcomes] == [Outcome.FAILED, Outcome.OK]
    assert "150 new lists a day" in outcomes[0][1]
    assert len(klaviyo_fake.lists) == 1
    if concurrency == 1:  # the second list was not even asked for
        assert klaviyo_fake.calls[("POST", "/api/lists")] == 1


def test_a_person_deleted_at_the_source_leaves_every_owned_list_and_is_suppressed(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    synced = [person(e, add=["crm-a", "crm-b"]) for e in ("del@example.com", "stay@example.com")]
    settle(klaviyo_fake, dest, synced)
    profile = klaviyo_fake.profile("del@example.com")
    assert profile is not None and profile.email_marketing.consent == "SUBSCRIBED"
    theirs = klaviyo_fake.add_list("their-own")
    theirs.members[profile.id] = datetime.now(UTC)
    untouched = _consent_and_lists(klaviyo_fake, "stay@example.com")
    klaviyo_fake.reset_counters()

    gone = person(
        "del@example.com",
        NONE,
        action=Action.ARCHIVE,
        remove=["crm-a", "crm-b"],
        remote_id=profile.id,
        fields={},
    )
    [pending] = dest.push([gone])
    assert pending.outcome is Outcome.PENDING and pending.remote_id == profile.id
    assert pending.job is not None and pending.job.startswith("suppression:")
    assert klaviyo_fake.lists_of("del@example.com") == {"their-own"}  # left at once
    assert dest.collect(pending.job, [gone]) is None  # Klaviyo is still processing
    [result] = dest.collect(pending.job, [gone]) or []
    assert result.outcome is Outcome.OK and "suppressed" in result.message
    assert klaviyo_fake.suppressions("del@example.com") == ["USER_SUPPRESSED"]
    assert klaviyo_fake.subscriptions()["del@example.com"] == "UNSUBSCRIBED"
    assert klaviyo_fake.profile("del@example.com") is profile  # Klaviyo keeps the profile
    assert _consent_and_lists(klaviyo_fake, "stay@example.com") == untouched
    assert klaviyo_fake.calls[SUPPRESS] == 1
    assert klaviyo_fake.calls[SUBSCRIBE] == klaviyo_fake.calls[UNSUBSCRIBE] == 0
    # the opt-out is Klaviyo's now: the read-back reports it, nobody else
    [update] = dest.read_consent(since)
    assert (update.email, update.reason) == ("del@example.com", "suppressed by a user in Klaviyo")

    klaviyo_fake.reset_counters()
    [again] = dest.push([gone])  # re-sent (a failed earlier attempt): no second suppression
    assert again.outcome is Outcome.OK and "already suppressed" in again.message
    assert klaviyo_fake.calls[SUPPRESS] == 0


def test_a_run_after_a_deletion_at_the_source_suppresses_that_person_alone_then_rests(
    klaviyo_fake: FakeKlaviyo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the core: the deletion is pushed, pending on its suppression job, collected
    at the end of the run and acknowledged; the next run writes nothing."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=40)
    monkeypatch.setenv("CRMSYNC_TEST_KLAVIYO_KEY", klaviyo_fake.api_key)
    site.send_to(
        "kl",
        'kind = "klaviyo"\napi_key = "${CRMSYNC_TEST_KLAVIYO_KEY}"\n'
        f'base_url = "{klaviyo_fake.base_url}"\n',
    )
    klaviyo_fake.expect_consented(consented(site.data))
    klaviyo_fake.job_polls_until_complete = 1  # no waits: PENDING is tested above
    site.run_json()
    subscribed = sorted(
        email
        for email, state in klaviyo_fake.subscriptions().items()
        if state == "SUBSCRIBED" and klaviyo_fake.lists_of(email)
    )
    assert subscribed, "nobody with a list and a subscription after the first run"
    deleted = subscribed[0]
    before = _everyone(klaviyo_fake)
    with open(site.data / "customers.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["email"].strip().lower() == deleted:
            row["deleted"], row["updated_at"] = "true", "2026-10-31T12:00:00+03:00"
    with open(site.data / "customers.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    counts = site.run_json()["destinations"]["kl"]
    assert counts.get("archive") == 1 and counts.get("failed", 0) == 0, counts
    assert klaviyo_fake.lists_of(deleted) == set()
    assert klaviyo_fake.suppressions(deleted) == ["USER_SUPPRESSED"]
    assert klaviyo_fake.subscriptions()[deleted] == "UNSUBSCRIBED"
    after = _everyone(klaviyo_fake)
    assert len(after) == len(before)  # no profile made
    assert {k: v for k, v in after.items() if k[0] != deleted} == {
        k: v for k, v in before.items() if k[0] != deleted
    }
    klaviyo_fake.reset_counters()
    site.run_json()
    assert klaviyo_fake.writes() == 0


def _everyone(fake: FakeKlaviyo) -> dict[tuple[str, str], tuple[object, ...]]:
    """(label, id) -> e-mail and SMS consent, suppressions, lists: every profile's state."""
    return {
        (p.label, p.id): (
            p.email_marketing.consent,
            p.sms_marketing.consent,
            [s["reason"] for s in p.email_marketing.suppression],
            {x.name for x in fake.lists.values() if p.id in x.members},
        )
        for p in fake.profiles.values()
    }


def _consent_and_lists(fake: FakeKlaviyo, email: str) -> tuple[str, list[str], set[str]]:
    profile = fake.profile(email)
    assert profile is not None
    return profile.email_marketing.consent, fake.suppressions(email), fake.lists_of(email)


def test_people_klaviyo_does_not_have_are_ok_without_a_suppression(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.add_profile("kept@example.com")
    never = person("never@example.com", action=Action.DELETE, fields={})
    # the ledger's profile was deleted in Klaviyo since: its id finds nothing
    stale = person("kept@example.com", action=Action.ARCHIVE, remote_id="01STALE", fields={})
    results = dest.push([never, stale])
    assert [(r.outcome, r.message) for r in results] == [(Outcome.OK, "not in Klaviyo")] * 2
    assert klaviyo_fake.writes() == 0 and klaviyo_fake.profile("never@example.com") is None
    assert klaviyo_fake.suppressions("kept@example.com") == []


def test_deletions_are_suppressed_100_addresses_a_job(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    emails = [f"p{i:03d}@example.com" for i in range(101)]
    for email in emails:
        klaviyo_fake.add_profile(email)
    gone = [person(e, action=Action.DELETE, fields={}) for e in emails]
    results = settle(klaviyo_fake, dest, gone)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert "the profile stays" in results["e:p000@example.com"].message
    assert klaviyo_fake.calls[SUPPRESS] == 2  # 100 + 1
    assert sorted(len(j.emails) for j in klaviyo_fake.suppression_jobs.values()) == [1, 100]
    assert all(klaviyo_fake.suppressions(e) == ["USER_SUPPRESSED"] for e in emails)


def test_a_deleted_phone_only_person_leaves_the_lists_and_sms_only_with_sms_on(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    phones = {False: "+905321234567", True: "+905329876543"}  # by the sms setting
    texting = make(klaviyo_fake, sms=True)
    try:
        synced = [person(None, phone=p, sms=SUB, add=["crm-a"]) for p in phones.values()]
        settle(klaviyo_fake, texting, synced)
        profiles = {sms: klaviyo_fake.profile_by_phone(p) for sms, p in phones.items()}
        klaviyo_fake.reset_counters()
        for sms, profile in profiles.items():
            assert profile is not None and profile.sms_marketing.consent == "SUBSCRIBED"
            gone = person(
                None,
                phone=profile.phone_number,
                action=Action.ARCHIVE,
                remove=["crm-a"],
                remote_id=profile.id,
                fields={},
            )
            [result] = (texting if sms else dest).push([gone])  # nothing to suppress
            assert result.outcome is Outcome.OK and "no e-mail in Klaviyo" in result.message
            assert ("SMS unsubscribed" in result.message) is sms
            assert profile.sms_marketing.consent == ("UNSUBSCRIBED" if sms else "SUBSCRIBED")
            assert profile.email_marketing.consent == "NEVER_SUBSCRIBED"
    finally:
        texting.close()
    assert klaviyo_fake.members("crm-a") == set()
    assert klaviyo_fake.calls[SUPPRESS] == klaviyo_fake.calls[SUBSCRIBE] == 0
    assert klaviyo_fake.calls[UNSUBSCRIBE] == 1  # the SMS one, with sms = true only


def test_read_consent_returns_unsubscribes_and_suppressions_since_the_cursor(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    for email in ("old@example.com", "new@example.com", "bounce@example.com"):
        klaviyo_fake.add_profile(email, email_consent="SUBSCRIBED")
    klaviyo_fake.add_profile("fine@example.com")
    klaviyo_fake.expect_consented(["bounce@example.com"])  # bounced, still subscribed
    klaviyo_fake.unsubscribe("old@example.com", at=old)
    klaviyo_fake.unsubscribe("New@Example.com")
    klaviyo_fake.suppress("bounce@example.com", "HARD_BOUNCE")
    updates = list(dest.read_consent(datetime.now(UTC) - timedelta(days=1)))
    by_email = {u.email: u for u in updates}
    assert set(by_email) == {"new@example.com", "bounce@example.com"}
    assert by_email["new@example.com"].reason == "unsubscribed in Klaviyo"
    assert by_email["bounce@example.com"].reason == "hard bounce in Klaviyo"
    assert all(u.state is ConsentState.UNSUBSCRIBED and u.channel is Channel.EMAIL for u in updates)
    assert {u.email for u in dest.read_consent(None)} == {
        "old@example.com",
        "new@example.com",
        "bounce@example.com",
    }


def test_a_burst_of_opt_outs_is_read_in_windows_cut_again_not_page_after_page(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """450 opt-outs within two minutes of an eight-hour read (a first sync's): the full
    window is cut again until each part fits a page, so no cursor is followed and the
    read takes a few rounds where one window would take five pages in turn; it finds
    exactly what one filter finds."""
    now = datetime.now(UTC).replace(microsecond=0)
    since = now - timedelta(hours=8)
    burst = now - timedelta(hours=3)
    for number in range(450):
        email = f"b{number}@example.com"
        klaviyo_fake.add_profile(email, email_consent="SUBSCRIBED")
        klaviyo_fake.unsubscribe(email, at=burst + timedelta(seconds=number * 120 // 450))
    klaviyo_fake.add_profile("early@example.com", email_consent="SUBSCRIBED")
    klaviyo_fake.unsubscribe("early@example.com", at=since - timedelta(minutes=1))
    queries: list[str] = []
    handle = klaviyo_fake.handle

    def seen(method: str, target: str, *args: Any) -> Any:
        queries.append(target)
        return handle(method, target, *args)

    klaviyo_fake.handle = seen  # type: ignore[method-assign,assignment]
    api, fields = dest._api, ["email", "subscriptions"]
    found = [p["attributes"]["email"] for p in readback.read(
        api, readback.windows(since, now), fields, dest._pool, now
    )]  # fmt: skip
    klaviyo_fake.handle = handle  # type: ignore[method-assign]
    assert sorted(found) == sorted(f"b{n}@example.com" for n in range(450))
    assert not any("page%5Bcursor%5D" in q or "page[cursor]" in q for q in queries)
    assert 8 < len(queries) < 60
    assert {u.email for u in dest.read_consent(since)} == set(found)


def test_check_passes_with_a_good_key(dest: KlaviyoDestination, klaviyo_fake: FakeKlaviyo) -> None:
    checks = dest.check()
    assert all(c.ok for c in checks), checks
    assert {"scope lists:read", "scope profiles:read", "scope subscriptions:read"} <= {
        c.what for c in checks
    }
    assert klaviyo_fake.api_key not in repr(checks)


def test_check_names_the_config_key_for_a_bad_key_and_the_scope_for_a_403(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    wrong = make(klaviyo_fake, api_key="pk_" + "0" * 34)
    try:
        [check] = wrong.check()
    finally:
        wrong.close()
    assert not check.ok and "api_key" in check.detail and "0" * 34 not in check.detail
    klaviyo_fake.scopes = {"lists:read"}
    dest = make(klaviyo_fake)
    try:
        checks = {c.what: c for c in dest.check()}
    finally:
        dest.close()
    assert checks["scope lists:read"].ok
    assert not checks["scope profiles:read"].ok
    assert "profiles:read" in checks["scope profiles:read"].detail
    # collecting the suppression jobs of deletions needs it
    assert not checks["scope subscriptions:read"].ok
    assert "subscriptions:read" in checks["scope subscriptions:read"].detail


def consent_windows(since: datetime | None, now: datetime, slices: int) -> list[str]:
    return [window.filter() for window in readback.windows(since, now, slices)]


def test_the_read_backs_time_slices_share_their_bounds_and_leave_none_out() -> None:
    since = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    filters = consent_windows(since, since + timedelta(hours=8), 8)
    assert len(filters) == 8
    field = "subscriptions.email.marketing.suppression.timestamp"
    first = "greater-than({0},2026-11-01T08:00:00Z),less-or-equal({0},2026-11-01T09:00:00Z)"
    assert filters[0] == first.format(field)
    assert filters[1].startswith(f"greater-than({field},2026-11-01T09:00:00Z),")
    assert filters[-1] == f"greater-than({field},2026-11-01T15:00:00Z)"  # open: made while reading
    one = [f"greater-than({field},2000-01-01T00:00:00Z)"]
    assert consent_windows(None, since, 8) == one  # a first read: one filter
    # bounds in whole seconds: 3 s cut in 8 leaves the distinct windows (0, 1], (1, 2], (2, ...)
    assert len(consent_windows(since, since + timedelta(seconds=3), 8)) == 3


def test_a_read_back_in_time_slices_reads_what_one_filter_reads(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """Every opt-out after the cursor comes, whatever slice its time falls in, one made on
    a slice's bound too, and one suppressed twice (in two slices) comes in each (the core
    records an opt-out once)."""
    now = datetime.now(UTC).replace(microsecond=0)
    since = now - timedelta(hours=8)
    times = [since - timedelta(minutes=5), since, since + timedelta(hours=1)]  # before, on
    times += [since + timedelta(minutes=13 * i, seconds=i) for i in range(1, 36)]
    for number, at in enumerate(times):
        email = f"p{number}@example.com"
        klaviyo_fake.add_profile(email, email_consent="SUBSCRIBED")
        klaviyo_fake.unsubscribe(email, at=at)
    klaviyo_fake.suppress("p5@example.com", "HARD_BOUNCE", at=now - timedelta(minutes=1))
    api, fields = dest._api, ["email", "subscriptions"]
    in_flight, lock, handle = [0, 0], threading.Lock(), klaviyo_fake.handle

    def counted(*args: Any) -> Any:  # requests at once (now, most)
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            time.sleep(0.05)  # long enough for the others of its round to arrive
            return handle(*args)
        finally:
            with lock:
                in_flight[0] -= 1

    klaviyo_fake.handle = counted  # type: ignore[method-assign,assignment]
    sliced = list(readback.read(api, readback.windows(since, now, 8), fields, dest._pool, now))
    assert in_flight[1] > 1  # the slices' pages side by side
    klaviyo_fake.handle = handle  # type: ignore[method-assign]
    [whole] = consent_windows(since, now, 1)
    expected = {p["attributes"]["email"] for p in api.profiles(whole, fields)}
    assert expected == {f"p{n}@example.com" for n, at in enumerate(times) if at > since}
    emails = [p["attributes"]["email"] for p in sliced]
    assert set(emails) == expected
    # suppressed twice: in the slices of both times (and, as the fake reads a filter on a
    # list of times, those between); everyone else once
    assert emails.count("p5@example.com") >= 2
    assert all(emails.count(email) == 1 for email in expected - {"p5@example.com"})
    assert {u.email for u in dest.read_consent(since)} == expected
