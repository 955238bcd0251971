"""Consent in both directions: the core's intent -> member status, Mailchimp status -> events.

Pure functions only. The core decides the intent (``crmsync.consent``); ``status_plan``
only translates it: ``status_if_new`` applies to people Mailchimp does not know yet, and
``status`` (which applies to existing members too) is only ever sent to *lower* a status,
for an UNSUBSCRIBE intent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from crmsync.contract import ConsentIntent, ConsentUpdate
from crmsync.records import Channel, ConsentState

NotSubscribed = Literal["transactional", "skip"]

# The member statuses read back as opt-outs, with the reason shown in ``crmsync status``.
OPT_OUT_STATUSES: tuple[tuple[str, str], ...] = (
    ("unsubscribed", "unsubscribed in Mailchimp"),
    ("cleaned", "cleaned in Mailchimp"),
)


@dataclass(frozen=True, slots=True)
class StatusPlan:
    """What one member entry in a batch subscribe says about status."""

    status_if_new: str  # used only when Mailchimp creates the member
    status: str | None = None  # also applied to existing members; only ever "unsubscribed"

    def fields(self) -> dict[str, str]:
        out = {"status_if_new": self.status_if_new}
        if self.status is not None:
            out["status"] = self.status
        return out


def status_plan(intent: ConsentIntent, not_subscribed: NotSubscribed) -> StatusPlan | None:
    """The status fields for a person with this e-mail consent intent; None = don't send.

    - SUBSCRIBE_IF_NEW: subscribed if new; an existing member keeps whatever status
      Mailchimp has (an unsubscribe or cleaning there must win, so ``status`` is never sent).
    - UNSUBSCRIBE: unsubscribed, new or existing: an opt-out recorded in the platform wins.
    - LEAVE: no consent. New people become ``transactional`` (no marketing e-mail) or are
      not added at all, as configured; existing members keep their status.
    """
    if intent is ConsentIntent.SUBSCRIBE_IF_NEW:
        return _SUBSCRIBE_IF_NEW
    if intent is ConsentIntent.UNSUBSCRIBE:
        return _UNSUBSCRIBE
    if not_subscribed == "skip":
        return None
    return _TRANSACTIONAL_IF_NEW


# the three plans there are, made once: this is asked twice for each person of a push
_SUBSCRIBE_IF_NEW = StatusPlan("subscribed")
_UNSUBSCRIBE = StatusPlan("unsubscribed", "unsubscribed")
_TRANSACTIONAL_IF_NEW = StatusPlan("transactional")


def mailchimp_time(moment: datetime) -> str:
    """ISO 8601 in UTC to the second, as Mailchimp's ``since_*`` filters expect.

    Sub-seconds are dropped (floored), so a filter never skips a change made in the same
    second; the core de-duplicates the rare change read twice.
    """
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat()


def parse_mailchimp_time(value: object) -> datetime | None:
    """A Mailchimp time (``+00:00`` or ``Z``; Python 3.11's ``fromisoformat`` reads both,
    so no text is rewritten per member); a time without an offset is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# looked up once: an enum member read from its class costs a descriptor call, and a
# read-back makes an update per opted-out member (every one a first sync unsubscribed)
_EMAIL = Channel.EMAIL
_UNSUBSCRIBED = ConsentState.UNSUBSCRIBED


def consent_update(member: Mapping[str, Any], reason: str, fallback: datetime) -> ConsentUpdate:
    """One opted-out member from ``GET /lists/{id}/members`` as a consent event.

    ``fallback`` (the time of the read) is used only when Mailchimp omits ``last_changed``.
    """
    at = parse_mailchimp_time(member.get("last_changed")) or fallback
    email = str(member.get("email_address", "")).strip().lower()
    return ConsentUpdate(email, _EMAIL, _UNSUBSCRIBED, at, reason)
