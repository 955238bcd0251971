"""Consent in both directions: the core's intents -> Klaviyo's subscription jobs, and
Klaviyo's opt-outs -> consent events.

Pure functions only; the core decides the intents (``crmsync.consent``). Klaviyo's
subscribe job lifts UNSUBSCRIBE, SPAM_REPORT and USER_SUPPRESSED suppressions, so it is
sent only for a person who is new to Klaviyo (no acknowledged record in crmsync *and*
created in Klaviyo by this very import, or by an earlier import of crmsync's that was
never acknowledged: ``Change.resent``) and whose profile there has never been subscribed
or suppressed. An unsubscribe is sent whatever Klaviyo has, unless it already
says unsubscribed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crmsync.contract import Change, ConsentIntent, ConsentUpdate
from crmsync.records import Channel, ConsentState

NEVER = "NEVER_SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"
SUPPRESSION_REASONS = {
    "UNSUBSCRIBE": "unsubscribed",
    "HARD_BOUNCE": "hard bounce",
    "SPAM_COMPLAINT": "spam complaint",
    "INVALID_EMAIL": "invalid address",
    "USER_SUPPRESSED": "suppressed by a user",
}


@dataclass(frozen=True, slots=True)
class KlaviyoConsent:
    """What Klaviyo says about one profile's marketing consent (None: it did not say)."""

    email: str | None = None
    email_suppressed: bool = True
    sms: str | None = None

    @classmethod
    def of(cls, attributes: Mapping[str, Any]) -> KlaviyoConsent:
        """From a profile's attributes with ``additional-fields[profile]=subscriptions``."""
        subscriptions = attributes.get("subscriptions")
        if not isinstance(subscriptions, Mapping):
            return cls()  # unknown: nobody is subscribed on a guess
        email = _marketing(subscriptions, "email")
        sms = _marketing(subscriptions, "sms")
        return cls(
            email=_text(email.get("consent")),
            email_suppressed=bool(email.get("suppression")),
            sms=_text(sms.get("consent")),
        )

    def never_subscribed(self, channel: Channel) -> bool:
        if channel is Channel.EMAIL:
            return self.email == NEVER and not self.email_suppressed
        return self.sms == NEVER

    def unsubscribed(self, channel: Channel) -> bool:
        return (self.email if channel is Channel.EMAIL else self.sms) == UNSUBSCRIBED


@dataclass(frozen=True, slots=True)
class ConsentPlan:
    """The subscription changes one person gets: the channels to subscribe, to unsubscribe."""

    subscribe: frozenset[Channel] = frozenset()
    unsubscribe: frozenset[Channel] = frozenset()


def plan_consent(
    change: Change,
    phone: str | None,
    state: KlaviyoConsent,
    *,
    created: bool,
    sms: bool,
) -> ConsentPlan:
    """The consent moves for a person Klaviyo just imported.

    ``created``: Klaviyo made the profile in this import. A change re-sent after a crash
    counts as creating it too: the killed import may have made the profile and never
    subscribed it. ``phone`` is the number sent; SMS consent is managed only with ``sms``
    and a number.
    """
    subscribe: set[Channel] = set()
    unsubscribe: set[Channel] = set()
    channels = [(Channel.EMAIL, change.email_intent, change.email)]
    if sms:
        channels.append((Channel.SMS, change.sms_intent, phone))
    for channel, intent, address in channels:
        if not address:
            continue
        if intent is ConsentIntent.SUBSCRIBE_IF_NEW:
            if change.is_new and (created or change.resent) and state.never_subscribed(channel):
                subscribe.add(channel)
        elif intent is ConsentIntent.UNSUBSCRIBE and not state.unsubscribed(channel):
            unsubscribe.add(channel)
    return ConsentPlan(frozenset(subscribe), frozenset(unsubscribe))


def opt_outs(
    profile: Mapping[str, Any], since: datetime | None, *, sms: bool
) -> Iterator[ConsentUpdate]:
    """The opt-outs one profile from ``GET /api/profiles`` shows after ``since``.

    E-mail: the latest suppression (an unsubscribe, a bounce, a spam complaint...). SMS, when
    managed: an UNSUBSCRIBED consent. Profiles without an e-mail address cannot be reported
    (the core keys consent events by address).
    """
    attributes = profile.get("attributes") or {}
    email = _text(attributes.get("email"))
    if not email:
        return
    subscriptions = attributes.get("subscriptions")
    if not isinstance(subscriptions, Mapping):
        return
    marketing = _marketing(subscriptions, "email")
    latest: tuple[datetime, str] | None = None
    for entry in marketing.get("suppression") or []:
        at = parse_time(entry.get("timestamp")) if isinstance(entry, Mapping) else None
        if at is not None and (latest is None or at > latest[0]):
            latest = (at, str(entry.get("reason") or "suppressed"))
    if latest is not None and (since is None or latest[0] > since):
        reason = SUPPRESSION_REASONS.get(latest[1], latest[1].lower().replace("_", " "))
        yield _update(email, Channel.EMAIL, latest[0], f"{reason} in Klaviyo")
    if sms:
        text = _marketing(subscriptions, "sms")
        at = parse_time(text.get("last_updated")) or parse_time(text.get("consent_timestamp"))
        if text.get("consent") == UNSUBSCRIBED and at is not None and (since is None or at > since):
            yield _update(email, Channel.SMS, at, "SMS unsubscribed in Klaviyo")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _update(email: str, channel: Channel, at: datetime, reason: str) -> ConsentUpdate:
    return ConsentUpdate(
        email=email.strip().lower(),
        channel=channel,
        state=ConsentState.UNSUBSCRIBED,
        at=at,
        reason=reason,
    )


def _marketing(subscriptions: Mapping[str, Any], channel: str) -> Mapping[str, Any]:
    found = (subscriptions.get(channel) or {}).get("marketing")
    return found if isinstance(found, Mapping) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
