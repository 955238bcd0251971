"""The diff's decisions: what is pushed, what is skipped and why."""

from __future__ import annotations

from typing import Any

from crmsync.contract import Action, ConsentIntent
from crmsync.diff import Acked, InFlight, OpenFailure, Policy, Skip, decide, payload_hash

NOW = 1_800_000_000_000
POLICY = Policy(max_attempts=3, now_ms=NOW)


def profile(**kw: Any) -> dict[str, Any]:
    base = {
        "person_key": "e:a@example.com",
        "email": "a@example.com",
        "phone": None,
        "email_consent": "subscribed",
        "sms_consent": "none",
        "deleted": False,
    }
    base.update(kw)
    return base


def acked_for(
    fields: dict[str, Any],
    tags: tuple[str, ...],
    p: dict[str, Any] | None = None,
    status: str = "synced",
    acked_at: int = NOW - 1000,
) -> Acked:
    p = p or profile()
    digest = payload_hash(
        fields, p["email"], p["phone"], p["email_consent"], p["sms_consent"], Action.UPSERT
    )
    return Acked(digest, tags, "rid", status, acked_at, None)


def test_a_new_person_is_created_with_all_memberships_added() -> None:
    change = decide(profile(), {"n": 1}, ("crm-new", "crm-vip"), True, None, None, POLICY)
    assert not isinstance(change, Skip)
    assert change.is_new and change.action is Action.UPSERT
    assert change.memberships_add == ("crm-new", "crm-vip") and change.memberships_remove == ()
    assert change.memberships == ("crm-new", "crm-vip")


def test_same_payload_and_tags_is_unchanged() -> None:
    acked = acked_for({"n": 1}, ("crm-new",))
    assert decide(profile(), {"n": 1}, ("crm-new",), True, acked, None, POLICY) is Skip.UNCHANGED


def test_tag_moves_alone_produce_adds_and_removes() -> None:
    acked = acked_for({"n": 1}, ("crm-new",))
    change = decide(profile(), {"n": 1}, ("crm-repeat",), True, acked, None, POLICY)
    assert not isinstance(change, Skip)
    assert not change.is_new
    assert (change.memberships_add, change.memberships_remove) == (("crm-repeat",), ("crm-new",))
    assert change.remote_id == "rid"


def test_a_consent_change_alone_is_pushed() -> None:
    acked = acked_for({"n": 1}, ())
    change = decide(profile(email_consent="unsubscribed"), {"n": 1}, (), True, acked, None, POLICY)
    assert not isinstance(change, Skip)
    assert change.email_intent is ConsentIntent.UNSUBSCRIBE


def test_missing_identity_is_invalid_and_deleted_people_are_archived_only_if_synced() -> None:
    assert decide(profile(), {}, (), False, None, None, POLICY) is Skip.INVALID
    gone = profile(deleted=True)
    assert decide(gone, {}, (), True, None, None, POLICY) is Skip.NEVER_SYNCED_DELETED
    change = decide(gone, {"n": 1}, ("crm-x",), True, acked_for({"n": 1}, ("crm-x",)), None, POLICY)
    assert not isinstance(change, Skip)
    assert change.action is Action.ARCHIVE and change.fields == {}
    archived = acked_for({}, (), status="archived")
    assert decide(gone, {}, (), True, archived, None, POLICY) is Skip.UNCHANGED


def test_failures_are_retried_after_their_wait_and_under_a_cap() -> None:
    p = profile()
    digest = payload_hash({"n": 1}, p["email"], None, "subscribed", "none", Action.UPSERT)
    waiting = OpenFailure("failed", digest, 1, NOW + 60_000)
    assert decide(p, {"n": 1}, (), True, None, waiting, POLICY) is Skip.DEFERRED
    due = OpenFailure("failed", digest, 1, NOW - 1)
    assert not isinstance(decide(p, {"n": 1}, (), True, None, due, POLICY), Skip)
    capped = OpenFailure("failed", digest, 3, None)
    assert decide(p, {"n": 1}, (), True, None, capped, POLICY) is Skip.GAVE_UP
    assert not isinstance(decide(p, {"n": 2}, (), True, None, capped, POLICY), Skip)


def test_rejected_waits_for_a_new_payload_and_compliance_is_never_retried() -> None:
    p = profile()
    digest = payload_hash({"n": 1}, p["email"], None, "subscribed", "none", Action.UPSERT)
    rejected = OpenFailure("rejected", digest, 1, None)
    assert decide(p, {"n": 1}, (), True, None, rejected, POLICY) is Skip.REJECTED
    assert not isinstance(decide(p, {"n": 2}, (), True, None, rejected, POLICY), Skip)
    compliance = OpenFailure("compliance", digest, 1, None)
    assert decide(p, {"n": 2}, (), True, None, compliance, POLICY) is Skip.COMPLIANCE


def test_backfill_forces_unchanged_people_acked_before_it_started() -> None:
    acked = acked_for({"n": 1}, ())
    forced = Policy(max_attempts=3, now_ms=NOW, force_before_ms=NOW)
    assert not isinstance(decide(profile(), {"n": 1}, (), True, acked, None, forced), Skip)
    after = acked_for({"n": 1}, (), acked_at=NOW + 5)  # already re-pushed by this backfill
    assert decide(profile(), {"n": 1}, (), True, after, None, forced) is Skip.UNCHANGED
    since = Policy(max_attempts=3, now_ms=NOW, force_before_ms=NOW, force_since_ms=NOW - 10)
    assert decide(profile(), {"n": 1}, (), True, acked, None, since, NOW - 100) is Skip.UNCHANGED
    assert not isinstance(decide(profile(), {"n": 1}, (), True, acked, None, since, NOW), Skip)


# -- what was sent but never acknowledged ------------------------------------------------


def test_a_membership_that_may_have_been_applied_is_removed_when_the_person_leaves() -> None:
    """A push killed before its acknowledgement added crm-lapsed: the ledger never saw it,
    but the person must still leave it once they are no longer lapsed."""
    acked = acked_for({"n": 1}, ("crm-at-risk",))
    flying = InFlight("upsert", ("crm-at-risk", "crm-lapsed"), None)
    change = decide(profile(), {"n": 2}, ("crm-repeat",), True, acked, None, POLICY, None, flying)
    assert not isinstance(change, Skip)
    assert change.memberships_add == ("crm-repeat",)
    assert change.memberships_remove == ("crm-at-risk", "crm-lapsed")


def test_a_change_in_flight_is_sent_again_even_when_the_ledger_matches() -> None:
    acked = acked_for({"n": 1}, ("crm-new",))
    flying = InFlight("upsert", ("crm-new", "crm-vip"), None)
    change = decide(profile(), {"n": 1}, ("crm-new",), True, acked, None, POLICY, None, flying)
    assert not isinstance(change, Skip)
    assert (change.memberships_add, change.memberships_remove) == ((), ("crm-vip",))


def test_a_deleted_person_who_may_exist_at_the_destination_is_archived() -> None:
    """Never acknowledged, but an upsert went out: the contact may exist, so it goes."""
    gone = profile(deleted=True)
    flying = InFlight("upsert", ("crm-new",), None)
    change = decide(gone, {}, (), True, None, None, POLICY, None, flying)
    assert not isinstance(change, Skip)
    assert change.action is Action.ARCHIVE and change.memberships_remove == ("crm-new",)
    assert decide(gone, {}, (), True, None, None, POLICY) is Skip.NEVER_SYNCED_DELETED


def test_a_change_waiting_in_an_asynchronous_job_is_not_sent_twice() -> None:
    flying = InFlight("upsert", ("crm-new",), "job-1")
    assert decide(profile(), {"n": 1}, (), True, None, None, POLICY, None, flying) is (
        Skip.AWAITING_JOB
    )
