"""The Mailchimp destination against the fake: check, prepare, push, tags, deletions, consent."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kit import floor_calls
from connectors.mailchimp import MailchimpConfig, MailchimpDestination
from crmsync.contract import (
    Action,
    Change,
    ConnectorContext,
    ConsentIntent,
    Destination,
    FieldSpec,
    Outcome,
    PushResult,
)
from crmsync.errors import AuthError, ConfigError, TransientError
from crmsync.records import ConsentState
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake, subscriber_hash

__all__ = ["mailchimp_fake"]

# the core's consent intents, as a recorded opt-in, opt-out or nothing turns into them
SUB, UNSUB, NONE = ConsentIntent.SUBSCRIBE_IF_NEW, ConsentIntent.UNSUBSCRIBE, ConsentIntent.LEAVE
CONTEXT = ConnectorContext("mailchimp_test", Path("."))


def person(
    email: str | None,
    consent: ConsentIntent = SUB,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    fields: dict[str, Any] | None = None,
    action: Action = Action.UPSERT,
    remote_id: str | None = None,
) -> Change:
    return Change(
        person_key=f"e:{email}",
        action=action,
        is_new=True,
        email=email,
        phone=None,
        fields={"FNAME": "Ayşe"} if fields is None else fields,
        memberships_add=tuple(add),
        memberships_remove=tuple(remove),
        email_intent=consent,
        sms_intent=NONE,
        payload_hash="h",
        remote_id=remote_id,
    )


def make(fake: FakeMailchimp, **overrides: Any) -> MailchimpDestination:
    return MailchimpDestination(
        MailchimpConfig.model_validate(fake.destination_config(**overrides)), CONTEXT
    )


@pytest.fixture
def dest(mailchimp_fake: FakeMailchimp) -> Iterator[MailchimpDestination]:
    destination = make(mailchimp_fake)
    yield destination
    destination.close()


def push(
    fake: FakeMailchimp, dest: MailchimpDestination, changes: Sequence[Change]
) -> dict[str, PushResult]:
    """Pushes and declares who may be subscribed: those whose recorded consent says so."""
    previous = fake.consented or set()
    fake.expect_consented(
        previous | {c.email for c in changes if c.email and c.email_intent is SUB}
    )
    results = dest.push(changes)
    assert sorted(r.person_key for r in results) == sorted(c.person_key for c in changes)
    return {r.person_key: r for r in settle(dest, changes, results)}


def settle(
    dest: MailchimpDestination, changes: Sequence[Change], results: Sequence[PushResult]
) -> list[PushResult]:
    """The final results, as the core's collect at the end of a run makes them: people
    PENDING on the run's tag job are settled by ``collect`` with their changes."""
    by_key = {c.person_key: c for c in changes}
    jobs: dict[str, list[Change]] = {}
    final = []
    for result in results:
        if result.outcome is Outcome.PENDING and result.job:
            jobs.setdefault(result.job, []).append(by_key[result.person_key])
        else:
            final.append(result)
    for job, waiting in jobs.items():
        settled = dest.collect(job, waiting)
        assert settled is not None
        final += settled
    return final


def test_it_is_a_destination_registered_as_mailchimp(dest: MailchimpDestination) -> None:
    assert isinstance(dest, Destination)
    assert dest.kind == "mailchimp" and dest.config_model is MailchimpConfig
    assert dest.max_batch >= 500


def test_check_passes_for_a_good_key_and_list(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    checks = dest.check()
    assert [c.ok for c in checks] == [True, True, True]
    assert mailchimp_fake.api_key not in repr(checks)


def test_check_passes_a_key_without_data_centre_when_base_url_says_where() -> None:
    fake = FakeMailchimp(api_key=uuid.uuid4().hex).start()  # no "-us7": base_url decides
    try:
        destination = make(fake)
        checks = destination.check()
        destination.close()
    finally:
        fake.stop()
    assert [c.ok for c in checks] == [True, True, True], checks
    assert not fake.violations


def test_check_names_the_key_on_401_without_printing_it(mailchimp_fake: FakeMailchimp) -> None:
    wrong = "f" * 32 + "-us7"
    destination = make(mailchimp_fake, api_key=wrong)
    try:
        checks = destination.check()
    finally:
        destination.close()
    assert checks[-1].ok is False and "API key" in checks[-1].detail
    assert wrong not in repr(checks)


def test_check_names_the_list_id_on_404(mailchimp_fake: FakeMailchimp) -> None:
    destination = make(mailchimp_fake, list_id="nosuchlist")
    try:
        checks = destination.check()
    finally:
        destination.close()
    assert checks[-1].what == "list nosuchlist" and not checks[-1].ok
    assert "check list_id" in checks[-1].detail


def test_a_missing_list_stops_prepare_and_push_with_a_config_error(
    mailchimp_fake: FakeMailchimp,
) -> None:
    destination = make(mailchimp_fake, list_id="nosuchlist")
    try:
        with pytest.raises(ConfigError, match="no audience 'nosuchlist'") as raised:
            destination.prepare(FIELDS)
        assert raised.value.issues[0].key == "list_id"
        with pytest.raises(ConfigError, match="no audience"):
            destination.push([person("a@shop.example")])
    finally:
        destination.close()


def test_check_blames_the_data_centre_when_the_host_does_not_resolve(
    mailchimp_fake: FakeMailchimp,
) -> None:
    def no_such_host(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "[Errno -2] Name or service not known", request=request
        ) from socket.gaierror(-2, "Name or service not known")

    config = MailchimpConfig.model_validate(
        {"kind": "mailchimp", "api_key": "0" * 32 + "-zz9", "list_id": "l1"}
    )
    destination = MailchimpDestination(config, CONTEXT, transport=httpx.MockTransport(no_such_host))
    try:
        checks = destination.check()
    finally:
        destination.close()
    assert checks[-1].what == "data centre" and not checks[-1].ok
    assert "https://zz9.api.mailchimp.com/3.0" in checks[-1].detail and "'zz9'" in checks[-1].detail


FIELDS = [  # the mapping types a Mailchimp mapping can have (mappings.MAILCHIMP_MERGE_TYPES)
    FieldSpec("FNAME", "text"),
    FieldSpec("ORDERS", "integer", "Orders"),
    FieldSpec("SPENT", "number"),
    FieldSpec("LASTORDER", "date"),
    FieldSpec("BDAY", "birthday"),
    FieldSpec("VIPCUST", "text"),
    FieldSpec("STAGE", "dropdown", choices=("new", "active", "lapsed")),
]


def test_prepare_creates_missing_merge_fields_once(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    dest.prepare(FIELDS)
    types = mailchimp_fake.merge_field_types()
    assert {
        t: types[t] for t in ("FNAME", "ORDERS", "SPENT", "LASTORDER", "BDAY", "VIPCUST", "STAGE")
    } == {
        "FNAME": "text",
        "ORDERS": "number",
        "SPENT": "number",
        "LASTORDER": "date",
        "BDAY": "birthday",
        "VIPCUST": "text",
        "STAGE": "dropdown",
    }
    mailchimp_fake.reset_counters()
    make(mailchimp_fake).prepare(FIELDS)
    assert mailchimp_fake.write_calls == 0


def test_prepare_grows_dropdown_choices(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    dest.prepare([FieldSpec("STAGE", "dropdown", choices=("new",))])
    dest.prepare([FieldSpec("STAGE", "dropdown", choices=("new", "lapsed"))])
    stage = next(f for f in mailchimp_fake.audience.merge_fields if f["tag"] == "STAGE")
    assert stage["options"]["choices"] == ["new", "lapsed"]


def test_prepare_refuses_a_type_conflict_with_a_clear_message(dest: MailchimpDestination) -> None:
    with pytest.raises(ConfigError, match=r"merge field BIRTHDAY is of type 'birthday'.*'date'"):
        dest.prepare([FieldSpec("BIRTHDAY", "date")])


def test_values_are_sent_in_the_merge_fields_types(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    from datetime import date
    from decimal import Decimal

    dest.prepare(FIELDS)
    values = {
        "FNAME": "Ayşe",
        "ORDERS": 4,
        "SPENT": Decimal("1234.50"),
        "LASTORDER": datetime(2026, 10, 30, 22, 15, tzinfo=UTC),
        "BDAY": date(1991, 2, 28),
        "VIPCUST": True,
        "STAGE": "active",
    }
    results = push(mailchimp_fake, dest, [person("ayse@shop.example", fields=values)])
    assert results["e:ayse@shop.example"].outcome is Outcome.OK
    member = mailchimp_fake.member("ayse@shop.example")
    assert member is not None and member["merge_fields"] == {
        "FNAME": "Ayşe",
        "ORDERS": 4,
        "SPENT": 1234.5,
        "LASTORDER": "2026-10-30",
        "BDAY": "02/28",
        "VIPCUST": "true",
        "STAGE": "active",
    }
    assert results["e:ayse@shop.example"].remote_id == subscriber_hash("ayse@shop.example")


def test_a_number_that_is_not_finite_clears_the_field_and_fails_nobody(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    """NaN has no JSON form: it once failed the whole call, and so the 500 people in it."""
    from decimal import Decimal

    dest.prepare(FIELDS)
    changes = [
        person("nan@shop.example", fields={"SPENT": Decimal("NaN"), "ORDERS": 2}),
        person("inf@shop.example", fields={"SPENT": float("inf"), "ORDERS": 3}),
        person("ok@shop.example", fields={"SPENT": 5, "ORDERS": 4}),
    ]
    results = push(mailchimp_fake, dest, changes)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    for email, orders in (("nan@shop.example", 2), ("inf@shop.example", 3)):
        member = mailchimp_fake.member(email)
        assert member is not None and member["merge_fields"] == {"SPENT": "", "ORDERS": orders}


def test_one_address_written_two_ways_is_sent_once(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    """Mailchimp keys a member by the lower-cased address: the second spelling is refused
    before the call, not left for Mailchimp to refuse (or to apply twice)."""
    first, second = person("Ayse@Shop.example"), person(" ayse@shop.EXAMPLE")
    results = push(mailchimp_fake, dest, [first, second])
    assert results[first.person_key].outcome is Outcome.OK
    assert results[second.person_key].outcome is Outcome.REJECTED
    assert results[second.person_key].message == (
        f"same e-mail address as {first.person_key} in this batch"
    )
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}")] == 1


# What each recorded consent does to a new member and to an existing one of each status.
CONSENT_TABLE = [
    (SUB, None, "subscribed"),
    (SUB, "subscribed", "subscribed"),
    (SUB, "transactional", "transactional"),  # never raised by a sync
    (SUB, "unsubscribed", "unsubscribed"),
    (SUB, "cleaned", "cleaned"),
    (SUB, "archived", "subscribed"),
    (UNSUB, None, "unsubscribed"),
    (UNSUB, "subscribed", "unsubscribed"),
    (UNSUB, "transactional", "unsubscribed"),
    (UNSUB, "unsubscribed", "unsubscribed"),
    (UNSUB, "cleaned", "cleaned"),
    (UNSUB, "archived", "unsubscribed"),
    (NONE, None, "transactional"),
    (NONE, "subscribed", "subscribed"),  # subscribed in Mailchimp itself: left alone
    (NONE, "transactional", "transactional"),
    (NONE, "unsubscribed", "unsubscribed"),
    (NONE, "cleaned", "cleaned"),
    (NONE, "archived", "transactional"),
]


@pytest.mark.parametrize(("consent", "existing", "expected"), CONSENT_TABLE)
def test_consent_decides_new_members_and_never_raises_existing_ones(
    mailchimp_fake: FakeMailchimp,
    dest: MailchimpDestination,
    consent: ConsentIntent,
    existing: str | None,
    expected: str,
) -> None:
    email = "someone@shop.example"
    if existing is not None:
        mailchimp_fake.add_member(email, "subscribed" if existing == "archived" else existing)
        if existing == "archived":
            mailchimp_fake.set_status(email, "archived")
    subscribed_in_mailchimp = {email} if existing == "subscribed" else set()
    mailchimp_fake.expect_consented(subscribed_in_mailchimp)
    results = push(mailchimp_fake, dest, [person(email, consent)])
    assert results[f"e:{email}"].outcome is Outcome.OK
    assert mailchimp_fake.statuses() == {email: expected}


def test_skip_mode_does_not_add_people_without_an_opt_in(mailchimp_fake: FakeMailchimp) -> None:
    destination = make(mailchimp_fake, not_subscribed="skip")
    try:
        results = push(
            mailchimp_fake,
            destination,
            [person("none@shop.example", NONE), person("yes@shop.example")],
        )
    finally:
        destination.close()
    assert results["e:none@shop.example"].outcome is Outcome.REJECTED
    assert "not_subscribed = 'skip'" in results["e:none@shop.example"].message
    assert mailchimp_fake.statuses() == {"yes@shop.example": "subscribed"}


def test_per_member_refusals_become_per_person_outcomes(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    dest.prepare([FieldSpec("BDAY", "birthday")])
    mailchimp_fake.compliance_emails.add("held@shop.example")
    changes = [
        person("ok@shop.example"),
        person("held@shop.example"),
        person("not-an-address@nowhere"),
        person("baddate@shop.example", fields={"BDAY": "31st of May"}),
        person(None),
    ]
    results = push(mailchimp_fake, dest, changes)
    outcomes = {key: r.outcome for key, r in results.items()}
    assert outcomes == {
        "e:ok@shop.example": Outcome.OK,
        "e:held@shop.example": Outcome.COMPLIANCE,
        "e:not-an-address@nowhere": Outcome.REJECTED,
        "e:baddate@shop.example": Outcome.REJECTED,
        "e:None": Outcome.REJECTED,
    }
    assert "compliance state" in results["e:held@shop.example"].message
    assert "BDAY" in results["e:baddate@shop.example"].message
    assert results["e:None"].message == "Mailchimp needs an e-mail address"
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}")] == 1  # one call, nothing retried
    assert set(mailchimp_fake.statuses()) == {"ok@shop.example"}


def test_owned_tags_move_and_hand_made_tags_stay(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.add_member("a@shop.example", "subscribed", tags=["crm-lapsed", "Met at fair"])
    mailchimp_fake.add_member("b@shop.example", "subscribed", tags=["crm-vip"])
    results = push(
        mailchimp_fake,
        dest,
        [
            person("a@shop.example", add=["crm-vip"], remove=["crm-lapsed"]),
            person("b@shop.example", remove=["crm-vip"]),
            person("c@shop.example", add=["crm-vip", "crm-new"]),
            person("d@shop.example", remove=["Met at fair"]),
        ],
    )
    assert (
        results["e:d@shop.example"].outcome is Outcome.REJECTED
        and "refusing" in results["e:d@shop.example"].message
    )
    assert {k: r.outcome for k, r in results.items() if k != "e:d@shop.example"} == {
        "e:a@shop.example": Outcome.OK,
        "e:b@shop.example": Outcome.OK,
        "e:c@shop.example": Outcome.OK,
    }
    assert mailchimp_fake.tags_of("a@shop.example") == {"crm-vip", "Met at fair"}
    assert mailchimp_fake.tags_of("b@shop.example") == set()
    assert mailchimp_fake.tags_of("c@shop.example") == {"crm-vip", "crm-new"}
    assert mailchimp_fake.member("d@shop.example") is None  # nothing sent for a refused change
    # One call per touched tag that exists (crm-lapsed, crm-vip), adds and removes together;
    # crm-new is created carrying its member, so it needs no call of its own.
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}/segments/{segment_id}")] == 2
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}/segments")] == 1  # crm-new created
    assert mailchimp_fake.tagged_on_create == 1  # ...with c@ in it
    assert mailchimp_fake.calls[("GET", "/lists/{list_id}/segments")] == 1


def test_a_new_tag_is_created_with_its_first_500_members_and_the_rest_batched(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    changes = [person(f"p{i}@shop.example", add=["crm-vip"]) for i in range(1200)]
    results = push(mailchimp_fake, dest, changes)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert mailchimp_fake.tag_members() == {"crm-vip": {c.email for c in changes}}
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}/segments")] == 1
    assert mailchimp_fake.tagged_on_create == 500
    assert mailchimp_fake.calls[("POST", "/lists/{list_id}/segments/{segment_id}")] == 2  # 700


def test_people_mailchimp_refused_get_no_tags(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.compliance_emails.add("held@shop.example")
    push(
        mailchimp_fake,
        dest,
        [person("held@shop.example", add=["crm-vip"]), person("ok@shop.example", add=["crm-vip"])],
    )
    assert mailchimp_fake.tag_members() == {"crm-vip": {"ok@shop.example"}}


def test_a_tag_deleted_in_mailchimp_is_recreated(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    push(mailchimp_fake, dest, [person("a@shop.example", add=["crm-vip"])])
    audience = mailchimp_fake.audience
    (sid,) = audience.segments
    del audience.segments[sid], audience.segment_members[sid]
    results = push(mailchimp_fake, dest, [person("b@shop.example", add=["crm-vip"])])
    assert results["e:b@shop.example"].outcome is Outcome.OK
    assert mailchimp_fake.tag_members() == {"crm-vip": {"b@shop.example"}}


def test_creates_whose_answer_was_lost_are_not_mistaken_for_refusals(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.inject(500, after=True, only=("POST", "/lists/{list_id}/merge-fields"))
    mailchimp_fake.inject(502, after=True, only=("POST", "/lists/{list_id}/segments"))
    dest.prepare([FieldSpec("ORDERS", "integer")])
    results = push(mailchimp_fake, dest, [person("a@shop.example", add=["crm-vip"])])
    assert results["e:a@shop.example"].outcome is Outcome.OK
    assert mailchimp_fake.merge_field_types()["ORDERS"] == "number"
    assert mailchimp_fake.tag_members() == {"crm-vip": {"a@shop.example"}}
    assert mailchimp_fake.faults == []  # both lost answers happened


def test_deleted_people_are_archived_and_missing_ones_are_already_gone(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    push(mailchimp_fake, dest, [person("a@shop.example")])
    results = push(
        mailchimp_fake,
        dest,
        [
            person("a@shop.example", action=Action.ARCHIVE),
            person("never@shop.example", action=Action.ARCHIVE),
            person(None, action=Action.DELETE),
        ],
    )
    assert {k: (r.outcome, r.message) for k, r in results.items()} == {
        "e:a@shop.example": (Outcome.OK, "archived"),
        "e:never@shop.example": (Outcome.OK, "already gone"),
        "e:None": (Outcome.OK, "never sent to Mailchimp"),
    }
    assert mailchimp_fake.statuses() == {"a@shop.example": "archived"}


def test_permanent_deletion_forgets_and_a_later_upsert_is_a_compliance_refusal(
    mailchimp_fake: FakeMailchimp,
) -> None:
    destination = make(mailchimp_fake, deletion="delete_permanent")
    try:
        push(mailchimp_fake, destination, [person("a@shop.example", add=["crm-vip"])])
        gone = push(
            mailchimp_fake,
            destination,
            [person(None, action=Action.DELETE, remote_id=subscriber_hash("a@shop.example"))],
        )
        again = push(mailchimp_fake, destination, [person("a@shop.example")])
    finally:
        destination.close()
    assert gone["e:None"].outcome is Outcome.OK and mailchimp_fake.statuses() == {}
    assert again["e:a@shop.example"].outcome is Outcome.COMPLIANCE
    assert mailchimp_fake.tag_members() == {"crm-vip": set()}


def test_read_consent_returns_unsubscribes_and_cleanings_since(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    people = [person(f"p{i}@shop.example") for i in range(5)]
    push(mailchimp_fake, dest, people)
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    mailchimp_fake.set_status("p0@shop.example", "unsubscribed", at=old)
    mailchimp_fake.set_status("p1@shop.example", "unsubscribed", at=new)
    mailchimp_fake.set_status("p2@shop.example", "cleaned", at=new)
    everything = {(u.email, u.state, u.at, u.reason) for u in dest.read_consent(None)}
    assert everything == {
        ("p0@shop.example", ConsentState.UNSUBSCRIBED, old, "unsubscribed in Mailchimp"),
        ("p1@shop.example", ConsentState.UNSUBSCRIBED, new, "unsubscribed in Mailchimp"),
        ("p2@shop.example", ConsentState.UNSUBSCRIBED, new, "cleaned in Mailchimp"),
    }
    since = {u.email for u in dest.read_consent(datetime(2026, 3, 1, tzinfo=UTC))}
    assert since == {"p1@shop.example", "p2@shop.example"}
    # ...and a later push never re-subscribes them.
    push(mailchimp_fake, dest, people)
    assert mailchimp_fake.statuses()["p1@shop.example"] == "unsubscribed"
    assert mailchimp_fake.statuses()["p2@shop.example"] == "cleaned"


def test_read_consent_never_misses_a_change_in_the_cursors_own_second(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    push(mailchimp_fake, dest, [person("late@shop.example")])
    changed = datetime(2026, 6, 1, 12, 0, 7, tzinfo=UTC)
    mailchimp_fake.set_status("late@shop.example", "unsubscribed", at=changed)
    cursor = changed.replace(microsecond=900_000)  # read earlier in that same second
    assert [u.email for u in dest.read_consent(cursor)] == ["late@shop.example"]


def test_read_consent_paginates(mailchimp_fake: FakeMailchimp, dest: MailchimpDestination) -> None:
    for i in range(2300):
        mailchimp_fake.add_member(f"u{i}@shop.example", "unsubscribed")
    assert len({u.email for u in dest.read_consent(None)}) == 2300
    assert (
        mailchimp_fake.calls[("GET", "/lists/{list_id}/members")] == 3 + 1
    )  # 3 unsubscribed + 1 cleaned


def test_read_consent_fetches_the_pages_after_the_first_concurrently(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    """A large read-back (the unsubscribes a first sync pushed) costs rounds of calls."""
    for i in range(5500):
        mailchimp_fake.add_member(f"u{i}@shop.example", "unsubscribed")
    mailchimp_fake.latency = 0.05  # so that calls overlap if they can
    mailchimp_fake.max_in_flight = 0
    read = [u.email for u in dest.read_consent(None)]
    assert len(read) == len(set(read)) == 5500  # every member once, none twice
    assert mailchimp_fake.calls[("GET", "/lists/{list_id}/members")] == 6 + 1
    assert mailchimp_fake.max_in_flight > 1  # the five pages after the first overlapped


def test_transient_faults_are_retried_without_loss(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination
) -> None:
    mailchimp_fake.inject(503, 429)
    mailchimp_fake.inject(500, after=True)  # applied, but the answer is lost
    mailchimp_fake.inject(502)
    changes = [person(f"p{i}@shop.example", add=["crm-vip"]) for i in range(1200)]
    results = push(mailchimp_fake, dest, changes)
    assert {r.outcome for r in results.values()} == {Outcome.OK}
    assert set(mailchimp_fake.statuses()) == {c.email for c in changes}
    assert mailchimp_fake.tag_members()["crm-vip"] == {c.email for c in changes}
    assert mailchimp_fake.faults == []


def test_an_outage_stops_the_run_instead_of_failing_everyone(mailchimp_fake: FakeMailchimp) -> None:
    destination = make(mailchimp_fake, http={"retry": {"attempts": 2, "backoff_initial": 0.0}})
    mailchimp_fake.storm(1.0, statuses=(503,))
    changes = [person(f"p{i}@shop.example") for i in range(10)]
    mailchimp_fake.expect_consented(c.email for c in changes if c.email)  # a 503 may follow a write
    try:
        with pytest.raises(TransientError, match="unreachable"):
            destination.push(changes)
    finally:
        destination.close()


def test_a_refused_key_stops_the_push_with_an_auth_error(mailchimp_fake: FakeMailchimp) -> None:
    wrong = "e" * 32 + "-us7"
    destination = make(mailchimp_fake, api_key=wrong)
    try:
        with pytest.raises(AuthError) as raised:
            destination.push([person("a@shop.example")])
    finally:
        destination.close()
    assert wrong not in str(raised.value)


def test_calls_go_through_the_seam_not_the_sdks_own_requests(
    mailchimp_fake: FakeMailchimp, dest: MailchimpDestination, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the SDK sent a request itself")

    monkeypatch.setattr(requests, "post", forbidden)
    monkeypatch.setattr(requests, "get", forbidden)
    monkeypatch.setattr(requests.Session, "request", forbidden)
    results = push(mailchimp_fake, dest, [person("a@shop.example", add=["crm-vip"])])
    assert results["e:a@shop.example"].outcome is Outcome.OK


def test_concurrency_stays_within_max_connections(mailchimp_fake: FakeMailchimp) -> None:
    # a call takes this long, the fake's own checking included: long enough beside that
    # checking for three calls to overlap even on a loaded machine
    mailchimp_fake.latency = 0.1
    destination = make(mailchimp_fake, max_connections=3, batch_size=50)
    try:
        results = push(
            mailchimp_fake, destination, [person(f"p{i}@shop.example") for i in range(1000)]
        )
    finally:
        destination.close()
    assert len(results) == 1000
    assert mailchimp_fake.max_in_flight == 3  # parallel, and never beyond the cap
    assert mailchimp_fake.concurrency_rejections == 0


# -- tag moves gathered across the run -------------------------------------------------

TAG_CALL = ("POST", "/lists/{list_id}/segments/{segment_id}")
TAG_CREATE = ("POST", "/lists/{list_id}/segments")


def run_of(count: int) -> list[Change]:
    """People over several pushes of 1,000 (batch size 50): every 2nd in crm-a, every 3rd
    in crm-b, every 7th in crm-c, so each push ends with part-filled calls of every tag."""
    return [
        person(
            f"p{i}@shop.example",
            add=[t for t, every in (("crm-a", 2), ("crm-b", 3), ("crm-c", 7)) if i % every == 0],
        )
        for i in range(count)
    ]


def test_tag_calls_of_a_run_spanning_several_pushes_are_the_per_run_floor(
    mailchimp_fake: FakeMailchimp,
) -> None:
    dest = make(mailchimp_fake, batch_size=50)
    changes = run_of(3_500)
    mailchimp_fake.expect_consented(c.email for c in changes if c.email)
    answered: list[PushResult] = []
    try:
        for start in range(0, len(changes), dest.max_batch):
            answered += dest.push(changes[start : start + dest.max_batch])
        pending = [r for r in answered if r.outcome is Outcome.PENDING]
        # held moves are answered PENDING on the run's one tag job, the rest OK at once
        assert pending and len({r.job for r in pending}) == 1
        assert {r.outcome for r in answered} == {Outcome.OK, Outcome.PENDING}
        final = settle(dest, changes, answered)
    finally:
        dest.close()
    assert {r.outcome for r in final} == {Outcome.OK}
    expected = {
        tag: {c.email for c in changes if tag in c.memberships_add}
        for tag in ("crm-a", "crm-b", "crm-c")
    }
    assert mailchimp_fake.tag_members() == expected
    adds = {tag: len(members) for tag, members in expected.items()}
    carried = {tag: min(n, 50) for tag, n in adds.items()}  # each create carries 50
    per_run = floor_calls(adds, {}, 50, paired=True, carried=carried)
    assert mailchimp_fake.calls[TAG_CALL] == per_run
    assert mailchimp_fake.calls[TAG_CREATE] == 3
    # the same people planned push by push would have cost a remainder per push and tag
    per_push = sum(
        floor_calls(
            {t: sum(1 for c in changes[s : s + 1000] if t in c.memberships_add) for t in adds},
            {},
            50,
            paired=True,
            carried=carried if s == 0 else None,
        )
        for s in range(0, len(changes), 1000)
    )
    assert per_run < per_push


def test_a_held_tag_call_that_fails_fails_its_people_when_the_run_is_settled(
    mailchimp_fake: FakeMailchimp,
) -> None:
    mailchimp_fake.add_member("old@shop.example", "subscribed", tags=["crm-vip"])
    dest = make(mailchimp_fake)
    changes = [person(f"p{i}@shop.example", add=["crm-vip"]) for i in range(3)]
    mailchimp_fake.expect_consented(["old@shop.example", *(c.email or "" for c in changes)])
    try:
        answered = dest.push(changes)
        assert {r.outcome for r in answered} == {Outcome.PENDING}  # 3 of 500: held
        mailchimp_fake.inject(400, only=TAG_CALL)  # Mailchimp refuses the held call
        final = settle(dest, changes, answered)
    finally:
        dest.close()
    assert {r.outcome for r in final} == {Outcome.FAILED}
    assert all("crm-vip" in r.message for r in final)
    assert mailchimp_fake.tag_members() == {"crm-vip": {"old@shop.example"}}


def test_an_earlier_runs_tag_job_is_settled_by_sending_its_moves_again(
    mailchimp_fake: FakeMailchimp,
) -> None:
    """A run that stopped before its end left people PENDING on its tag job; the next
    run's destination rebuilds their moves from the changes in flight."""
    mailchimp_fake.add_member("a@shop.example", "subscribed", tags=["crm-lapsed"])
    changes = [
        person("a@shop.example", add=["crm-vip"], remove=["crm-lapsed"]),
        person("b@shop.example", add=["crm-vip", "crm-new"]),
    ]
    crashed = make(mailchimp_fake)
    try:
        mailchimp_fake.expect_consented(["a@shop.example", "b@shop.example"])
        answered = crashed.push(changes)  # ... and the run is killed before its collect
    finally:
        crashed.close()
    (job,) = {r.job for r in answered}
    assert job is not None
    assert mailchimp_fake.tags_of("b@shop.example") == set()  # the moves were only held
    later = make(mailchimp_fake)
    try:
        final = later.collect(job, changes)
    finally:
        later.close()
    assert final is not None and {r.outcome for r in final} == {Outcome.OK}
    assert mailchimp_fake.tags_of("a@shop.example") == {"crm-vip"}
    assert mailchimp_fake.tags_of("b@shop.example") == {"crm-vip", "crm-new"}
