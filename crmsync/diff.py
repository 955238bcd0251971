"""The diff: what one person's mapped payload means for one destination, given the ledger.

Pure functions, no I/O. ``decide`` compares the payload hash and the owned memberships
with what the destination last acknowledged, with what was sent but never acknowledged
(in flight), and with any open failure, and returns either a ``Change`` to push or the
reason nothing is pushed. The ledger itself is written only after the destination
acknowledges (see ``push``).

What is in flight counts as "may be applied": a membership it may have added is removed
when the person is no longer in that group, and a person it may have created is
archived when they are deleted at the source, although no acknowledgement came back.

``decide`` runs once per person and destination on every run, so it avoids per-call enum
look-ups and set arithmetic where a person has no acknowledged memberships. The hash itself must
never change for the same payload: the ledger holds hashes from earlier runs, and a new
hash function would re-send every contact once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from crmsync.consent import intent_for
from crmsync.contract import Action, Change
from crmsync.frozen import quick_init


@quick_init
@dataclass(frozen=True, slots=True)
class Acked:
    """The ledger row: what the destination last acknowledged for this person."""

    payload_hash: str
    memberships: tuple[str, ...]
    remote_id: str | None
    status: str  # synced | archived | deleted
    acked_at: int
    payload: str | None


@dataclass(frozen=True, slots=True)
class InFlight:
    """A change sent to the destination whose acknowledgement has not been recorded."""

    action: str  # upsert | archive | delete
    possible: tuple[str, ...]  # every owned group the person may be in at the destination
    job: str | None  # an asynchronous job still to collect; None: crashed or refused


@dataclass(frozen=True, slots=True)
class OpenFailure:
    reason_class: str  # failed | rejected | compliance
    payload_hash: str
    attempts: int
    next_attempt_at: int | None


_ACTION = {action: action.value for action in Action}  # Enum.value is a Python descriptor


class Skip(StrEnum):
    """Why a person produces no change; each is counted in the run report."""

    UNCHANGED = "unchanged"
    AWAITING_JOB = "awaiting_job"  # in an asynchronous job that has not finished yet
    INVALID = "invalid"  # the destination's identity field is empty (e.g. no e-mail)
    NEVER_SYNCED_DELETED = "deleted_unsynced"  # deleted at the source, never sent: nothing to do
    COMPLIANCE = "compliance"  # the destination refused on compliance grounds: never retried
    REJECTED = "rejected"  # refused before and the payload has not changed since
    DEFERRED = "deferred"  # failed before; waiting for its next attempt time
    GAVE_UP = "gave_up"  # failed max_attempts times


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int
    now_ms: int
    force_before_ms: int | None = None  # backfill: re-push what was acked before this
    force_since_ms: int | None = None  # backfill --since: only people active since this


def payload_hash(
    fields: Mapping[str, Any],
    email: str | None,
    phone: str | None,
    email_consent: str,
    sms_consent: str,
    action: Action,
) -> str:
    body = orjson.dumps(
        [_ACTION[action], email, phone, email_consent, sms_consent, fields],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def decide(
    profile: Mapping[str, Any],
    fields: Mapping[str, Any],
    memberships: tuple[str, ...],
    identity_ok: bool,
    acked: Acked | None,
    failure: OpenFailure | None,
    policy: Policy,
    activity_ms: int | None = None,
    in_flight: InFlight | None = None,
) -> Change | Skip:
    if failure is not None and failure.reason_class == "compliance":
        return Skip.COMPLIANCE
    if in_flight is not None and in_flight.job is not None:
        return Skip.AWAITING_JOB
    if profile["deleted"]:
        synced = acked is not None and acked.status == "synced"
        may_exist = synced or (in_flight is not None and in_flight.action == "upsert")
        if not may_exist:
            return Skip.NEVER_SYNCED_DELETED if acked is None else Skip.UNCHANGED
        action, fields, memberships = Action.ARCHIVE, {}, ()
    else:
        if not identity_ok:
            return Skip.INVALID
        action = Action.UPSERT
    email, phone = profile["email"], profile["phone"]
    email_consent = str(profile["email_consent"])
    sms_consent = str(profile["sms_consent"])
    digest = payload_hash(fields, email, phone, email_consent, sms_consent, action)
    old = acked.memberships if acked is not None and acked.status == "synced" else ()
    unchanged = (
        acked is not None
        and in_flight is None
        and acked.payload_hash == digest
        and old == memberships
    )
    if unchanged and not _forced(acked, policy, activity_ms):  # type: ignore[arg-type]
        return Skip.UNCHANGED
    if failure is not None:
        if failure.reason_class == "rejected" and failure.payload_hash == digest:
            return Skip.REJECTED
        if failure.reason_class == "failed":
            if failure.attempts >= policy.max_attempts and failure.payload_hash == digest:
                return Skip.GAVE_UP
            if failure.next_attempt_at is not None and failure.next_attempt_at > policy.now_ms:
                return Skip.DEFERRED
    possible = in_flight.possible if in_flight is not None else ()
    if old or possible:
        wanted = set(memberships)
        add = tuple(sorted(wanted - set(old)))
        remove = tuple(sorted(set(old).union(possible) - wanted))
    else:
        unique = len(memberships) < 2  # mappings give sorted names; one is sorted and unique
        add, remove = (memberships if unique else tuple(sorted(set(memberships)))), ()
    return Change(
        person_key=str(profile["person_key"]),
        action=action,
        is_new=acked is None,
        email=email,
        phone=phone,
        fields=fields,
        memberships_add=add,
        memberships_remove=remove,
        email_intent=intent_for(email_consent),
        sms_intent=intent_for(sms_consent),
        payload_hash=digest,
        remote_id=acked.remote_id if acked is not None else None,
        memberships=memberships,
        email_consent_at=profile.get("email_consent_at"),
        sms_consent_at=profile.get("sms_consent_at"),
        resent=in_flight is not None,
    )


def _forced(acked: Acked, policy: Policy, activity_ms: int | None) -> bool:
    if policy.force_before_ms is None or acked.acked_at >= policy.force_before_ms:
        return False
    if policy.force_since_ms is None:
        return True
    return activity_ms is not None and activity_ms >= policy.force_since_ms
