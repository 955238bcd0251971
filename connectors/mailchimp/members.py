"""Batch subscribe payloads and answers: Change -> member entry, answer -> Outcome per person.

Pure functions. The classification table for per-member errors is here, in one place:
compliance refusals are never retried, bad data is rejected until it changes, anything
else is a failure the core retries under its cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.mailchimp.consent import NotSubscribed, status_plan
from crmsync.contract import Change, Outcome

Encoder = Callable[[str, Any], Any]  # (merge tag, mapped value) -> value Mailchimp takes

_COMPLIANCE_HINTS = (
    "compliance state",  # "Member In Compliance State"
    "forgotten email",  # "Forgotten Email Not Subscribed"
    "permanently deleted",  # the text Mailchimp gives a forgotten address
)
_REJECT_HINTS = (
    "looks fake or invalid",
    "invalid email",
    "invalid resource",
    "merge field",
    "merge fields were invalid",
    "please enter",
    "please provide",
)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address (an id, not security)."""
    return hashlib.md5(email.strip().lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def member_entry(
    change: Change, not_subscribed: NotSubscribed, encode: Encoder
) -> dict[str, Any] | None:
    """The batch subscribe entry for an UPSERT change; None when the person is not sent."""
    if not change.email:
        return None
    plan = status_plan(change.email_intent, not_subscribed)
    if plan is None:
        return None
    entry: dict[str, Any] = {"email_address": change.email, **plan.fields()}
    if change.fields:
        entry["merge_fields"] = {tag: encode(tag, value) for tag, value in change.fields.items()}
    return entry


def upsert_body(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"members": list(entries), "update_existing": True}


@dataclass(frozen=True, slots=True)
class MemberResult:
    outcome: Outcome
    remote_id: str | None = None
    message: str = ""


def classify_member_error(error: Mapping[str, Any]) -> MemberResult:
    """One entry of the batch answer's ``errors`` as an outcome, with a readable reason."""
    text = str(error.get("error") or "")
    code = str(error.get("error_code") or "")
    field = str(error.get("field") or "")
    detail = str(error.get("field_message") or "")
    message = text or code or "Mailchimp refused this member"
    if field:
        message = f"{message} ({field}: {detail})" if detail else f"{message} ({field})"
    lowered = f"{text} {detail}".lower()
    if any(hint in lowered for hint in _COMPLIANCE_HINTS):
        return MemberResult(Outcome.COMPLIANCE, message=message)
    if field or any(hint in lowered for hint in _REJECT_HINTS):
        return MemberResult(Outcome.REJECTED, message=message)
    return MemberResult(Outcome.FAILED, message=message)


def read_answer(answer: Mapping[str, Any], sent: Sequence[str]) -> dict[str, MemberResult]:
    """Result per sent address (lower-cased) from a batch subscribe answer.

    Members appear in ``new_members``/``updated_members`` (OK, with their id) or in
    ``errors``; an address the answer does not mention is a FAILED, never assumed done.
    """
    found: dict[str, MemberResult] = {}
    for key in ("new_members", "updated_members"):
        for member in answer.get(key) or ():
            email = str(member.get("email_address", "")).lower()
            found[email] = MemberResult(Outcome.OK, str(member.get("id") or subscriber_hash(email)))
    for error in answer.get("errors") or ():
        found[str(error.get("email_address", "")).lower()] = classify_member_error(error)
    out: dict[str, MemberResult] = {}
    for email in sent:
        key = email.lower()
        out[key] = found.get(key, _UNMENTIONED)
    return out


_UNMENTIONED = MemberResult(
    Outcome.FAILED, message="Mailchimp's answer did not mention this member"
)
