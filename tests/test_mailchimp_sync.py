"""20,000 generated customers through the Mailchimp destination into the fake, end to end.

The people come from ``crmsync.sample`` (the same generator the demos and benchmarks use);
the changes are built here the way the core's diff would for a first run. The fake's final
members, merge fields and tags must be exactly what the changes say, with the fewest calls.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.kit import floor_calls
from connectors.mailchimp import MailchimpConfig, MailchimpDestination
from crmsync.consent import intent_for
from crmsync.contract import (
    Action,
    Change,
    ConnectorContext,
    ConsentIntent,
    FieldSpec,
    Outcome,
    PushResult,
)
from crmsync.records import ConsentState, Customer
from crmsync.sample import SampleSpec, iter_store
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake
from tests.test_mailchimp_destination import settle

__all__ = ["mailchimp_fake"]

pytestmark = pytest.mark.slow

PEOPLE = 20_000
UPSERT = ("POST", "/lists/{list_id}")
TAG_CALL = ("POST", "/lists/{list_id}/segments/{segment_id}")
FIELDS = [
    FieldSpec("FNAME", "text"),
    FieldSpec("LNAME", "text"),
    FieldSpec("CITY", "text"),
    FieldSpec("BDAY", "birthday"),
    FieldSpec("SINCE", "date"),
    FieldSpec("ORDERS", "integer"),
]
STATUS_IF_NEW = {
    ConsentIntent.SUBSCRIBE_IF_NEW: "subscribed",
    ConsentIntent.UNSUBSCRIBE: "unsubscribed",
    ConsentIntent.LEAVE: "transactional",
}


def tags_for(customer: Customer, number: int) -> tuple[str, ...]:
    tags = []
    if number % 10 == 0:
        tags.append("crm-vip")
    if customer.city == "İstanbul":
        tags.append("crm-istanbul")
    if customer.birthday is not None and customer.birthday.month == 11:
        tags.append("crm-birthday-nov")
    if number % 3 == 0:
        tags.append("crm-repeat")
    if customer.language and customer.language != "tr":
        tags.append("crm-foreign")
    return tuple(tags)


def first_run_changes(count: int) -> list[Change]:
    """One change per distinct e-mail (the core merges people by e-mail), as a first run."""
    changes: list[Change] = []
    seen: set[str] = set()
    for record in iter_store(SampleSpec(customers=count, orders_per_customer=0.0)):
        if not isinstance(record, Customer):
            continue
        if record.email in seen:
            continue
        if record.email:
            seen.add(record.email)
        number = len(changes)
        consent = record.email_consent.state if record.email_consent else ConsentState.NONE
        created = record.created_at or datetime(2026, 1, 1, tzinfo=UTC)
        changes.append(
            Change(
                person_key=f"e:{record.email}"
                if record.email
                else f"s:sample:{record.external_id}",
                action=Action.ARCHIVE if record.deleted else Action.UPSERT,
                is_new=True,
                email=record.email,
                phone=record.phone,
                fields={
                    "FNAME": record.first_name,
                    "LNAME": record.last_name,
                    "CITY": record.city,
                    "BDAY": record.birthday,
                    "SINCE": created,
                    "ORDERS": number % 7,
                },
                memberships_add=tags_for(record, number),
                memberships_remove=(),
                email_intent=intent_for(consent),
                sms_intent=ConsentIntent.LEAVE,
                payload_hash=str(number),
                memberships=tags_for(record, number),
            )
        )
    return changes


def expected_fields(change: Change) -> dict[str, Any]:
    values = change.fields
    birthday = values["BDAY"]
    return {
        "FNAME": values["FNAME"] or "",
        "LNAME": values["LNAME"] or "",
        "CITY": values["CITY"] or "",
        "BDAY": birthday.strftime("%m/%d") if birthday else "",
        "SINCE": values["SINCE"].astimezone(UTC).date().isoformat(),
        "ORDERS": values["ORDERS"],
    }


@pytest.fixture(scope="module")
def changes() -> list[Change]:
    return first_run_changes(PEOPLE)


@pytest.fixture
def dest(mailchimp_fake: FakeMailchimp) -> Iterator[MailchimpDestination]:
    config = MailchimpConfig.model_validate(mailchimp_fake.destination_config())
    destination = MailchimpDestination(config, ConnectorContext("mailchimp_sync", Path(".")))
    destination.prepare(FIELDS)
    yield destination
    destination.close()


def push_all(dest: MailchimpDestination, changes: Sequence[Change]) -> dict[str, PushResult]:
    """One run: every push, then the collect of what is pending at its end."""
    results: list[PushResult] = []
    for start in range(0, len(changes), dest.max_batch):
        batch = changes[start : start + dest.max_batch]
        got = dest.push(batch)
        assert len(got) == len(batch)
        results += got
    return {r.person_key: r for r in settle(dest, changes, results)}


def floor_for(
    dest: MailchimpDestination, changes: Sequence[Change], sent: set[str]
) -> tuple[int, int]:
    """(upsert calls, tag calls) no client could go below: upserts for the same push
    batches, tag calls for the whole run (a tag's moves may share calls across pushes).

    A tag's first push creates it carrying its first 500 members: they need no tag call.
    """
    upserts = 0
    for start in range(0, len(changes), dest.max_batch):
        batch = [c for c in changes[start : start + dest.max_batch] if c.person_key in sent]
        upserts += math.ceil(len(batch) / 500)
    ran = [c for c in changes if c.person_key in sent]
    adds = Counter(t for c in ran for t in c.memberships_add)
    removes = Counter(t for c in ran for t in c.memberships_remove)
    carried = {t: min(n, 500) for t, n in adds.items()}  # every tag is new here
    return upserts, floor_calls(adds, removes, 500, paired=True, carried=carried)


def assert_fake_holds(fake: FakeMailchimp, changes: Sequence[Change], compliance: set[str]) -> None:
    """Members, statuses, merge fields and tags exactly as the changes say."""
    upserted = [
        c for c in changes if c.action is Action.UPSERT and c.email and c.email not in compliance
    ]
    assert fake.statuses() == {c.email: STATUS_IF_NEW[c.email_intent] for c in upserted if c.email}
    for change in upserted:
        member = fake.member(change.email or "")
        assert member is not None and member["merge_fields"] == expected_fields(change), change
    expected_tags: dict[str, set[str]] = {}
    for change in upserted:
        for tag in change.memberships:
            expected_tags.setdefault(tag, set()).add(change.email or "")
    assert fake.tag_members() == expected_tags


def test_twenty_thousand_people_end_exactly_as_pushed(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination, changes: list[Change]
) -> None:
    fake = mailchimp_fake
    compliance = {c.email for c in changes[100:120] if c.email}
    fake.compliance_emails |= compliance
    fake.expect_consented(
        c.email for c in changes if c.email and c.email_intent is ConsentIntent.SUBSCRIBE_IF_NEW
    )
    fake.reset_counters()

    results = push_all(dest, changes)

    by_outcome = Counter(r.outcome for r in results.values())
    no_email = sum(1 for c in changes if not c.email and c.action is Action.UPSERT)
    assert by_outcome[Outcome.COMPLIANCE] == len(compliance)
    assert by_outcome[Outcome.REJECTED] == no_email > 0
    assert by_outcome[Outcome.OK] == len(changes) - len(compliance) - no_email
    assert_fake_holds(fake, changes, compliance)
    sent = {c.person_key for c in changes if c.email and c.action is Action.UPSERT}
    ok = {k for k, r in results.items() if r.outcome is Outcome.OK}
    upsert_floor, _ = floor_for(dest, changes, sent)
    _, tag_floor = floor_for(dest, changes, sent & ok)
    assert fake.calls[UPSERT] == upsert_floor
    assert fake.calls[TAG_CALL] == tag_floor
    assert fake.concurrency_rejections == 0 and fake.violations == []

    # The same changes again change nothing.
    before = (
        fake.statuses(),
        {h: dict(m["merge_fields"]) for h, m in fake.audience.members.items()},
        fake.tag_members(),
    )
    again = push_all(dest, changes)
    assert {k: r.outcome for k, r in again.items()} == {k: r.outcome for k, r in results.items()}
    after = (
        fake.statuses(),
        {h: dict(m["merge_fields"]) for h, m in fake.audience.members.items()},
        fake.tag_members(),
    )
    assert after == before


def test_two_pushes_at_once_end_exactly_as_pushed_with_the_fewest_calls(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination, changes: list[Change]
) -> None:
    """push() may run on two threads (``pushes_at_once`` could be 2): pushed side by side,
    the run's tag moves (held across the run) and the tag index they share end as one
    push after the other would."""
    fake = mailchimp_fake
    fake.expect_consented(
        c.email for c in changes if c.email and c.email_intent is ConsentIntent.SUBSCRIBE_IF_NEW
    )
    fake.reset_counters()
    batches = [changes[start : start + dest.max_batch] for start in (0, dest.max_batch)]
    assert all(batches) and sum(map(len, batches)) == len(changes)
    answers: dict[int, list[PushResult]] = {}
    started = threading.Barrier(2)

    def push(number: int) -> None:
        started.wait()
        answers[number] = dest.push(batches[number])

    threads = [threading.Thread(target=push, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = {r.person_key: r for r in settle(dest, changes, answers[0] + answers[1])}
    assert len(results) == len(changes)
    assert_fake_holds(fake, changes, set())
    sent = {c.person_key for c in changes if c.email and c.action is Action.UPSERT}
    upsert_floor, tag_floor = floor_for(dest, changes, sent)
    assert fake.calls[UPSERT] == upsert_floor
    assert fake.calls[TAG_CALL] == tag_floor
    assert fake.concurrency_rejections == 0 and fake.violations == []


def test_later_changes_move_only_owned_tags_and_never_resubscribe(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination, changes: list[Change]
) -> None:
    fake = mailchimp_fake
    first = changes[:4000]
    fake.expect_consented(
        c.email for c in first if c.email and c.email_intent is ConsentIntent.SUBSCRIBE_IF_NEW
    )
    push_all(dest, first)
    upserted = [c for c in first if c.email and c.action is Action.UPSERT]
    subscribed = [c for c in upserted if c.email_intent is ConsentIntent.SUBSCRIBE_IF_NEW]
    # In Mailchimp: some unsubscribe or bounce, a marketer tags some people by hand.
    gone = {c.email for c in subscribed[:150] if c.email}
    bounced = {c.email for c in subscribed[150:200] if c.email}
    read_from = datetime.now(UTC) + timedelta(hours=1)  # after the push's own changes
    later = read_from + timedelta(hours=1)
    for email in gone:
        fake.set_status(email, "unsubscribed", at=later)
    for email in bounced:
        fake.set_status(email, "cleaned", at=later)
    hand_tagged = {c.email for c in upserted[::7] if c.email}
    fake.tag_by_hand("Met at fair", hand_tagged)

    # The platform's next run: every vip loses crm-vip and gains crm-lapsed; all
    # formerly subscribed people are still SUBSCRIBED in the platform's records.
    moved = [
        replace(
            c,
            memberships_add=("crm-lapsed",),
            memberships_remove=("crm-vip",),
            memberships=(*(t for t in c.memberships if t != "crm-vip"), "crm-lapsed"),
        )
        for c in upserted
        if "crm-vip" in c.memberships
    ]
    fake.reset_counters()
    results = push_all(dest, moved)

    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert fake.calls[UPSERT] == math.ceil(len(moved) / 500)
    # crm-vip removals; crm-lapsed is new, and its create carries the first 500 adds
    assert fake.calls[TAG_CALL] == math.ceil(len(moved) / 500) + math.ceil(
        max(len(moved) - 500, 0) / 500
    )
    tags = fake.tag_members()
    assert tags["crm-lapsed"] == {c.email for c in moved}
    assert "crm-vip" not in tags or tags["crm-vip"] == set()
    assert tags["Met at fair"] == hand_tagged  # hand-made tag untouched
    statuses = fake.statuses()
    assert all(statuses[e] == "unsubscribed" for e in gone) and all(
        statuses[e] == "cleaned" for e in bounced
    )
    read_back = {(u.email, u.reason) for u in dest.read_consent(read_from)}
    assert read_back == {(e, "unsubscribed in Mailchimp") for e in gone} | {
        (e, "cleaned in Mailchimp") for e in bounced
    }


def test_faults_during_a_large_push_lose_and_double_nothing(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination, changes: list[Change]
) -> None:
    fake = mailchimp_fake
    batch = changes[:3000]
    fake.expect_consented(
        c.email for c in batch if c.email and c.email_intent is ConsentIntent.SUBSCRIBE_IF_NEW
    )
    fake.storm(0.25, statuses=(500, 502, 503, 429))
    results = push_all(dest, batch)
    fake.storm(0.0)
    failed = [r for r in results.values() if r.outcome is Outcome.FAILED]
    assert failed == []
    assert_fake_holds(fake, batch, compliance=set())
    assert sum(1 for _ in fake.audience.members) == len(
        {c.email for c in batch if c.email and c.action is Action.UPSERT}
    )
