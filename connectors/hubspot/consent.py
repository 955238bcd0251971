"""Consent in HubSpot: unsubscribes read back, and platform opt-outs written; never a
subscription.

Read back: the contacts HubSpot marks as unsubscribed from all e-mail
(``hs_email_optout``) whose record changed since the last read, found with the CRM
search (200 a page, sorted by ``lastmodifieddate``). A search stops at 10,000 results,
so a longer read starts a new search from the last time it saw. Each is an e-mail
opt-out as of that time; the core ignores the ones it already knows. Reading every
address's statuses from the communication preferences API instead would cost a call
per contact.

Written: a platform opt-out (``ConsentIntent.UNSUBSCRIBE``) unsubscribes the contact
from each of ``opt_out_subscriptions`` through the communication preferences API. HubSpot
refuses to unsubscribe an address that is not subscribed; such a refusal is read as done
when the address's status says NOT_SUBSCRIBED.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from connectors.hubspot.client import HubSpotApi
from crmsync.contract import ConsentUpdate
from crmsync.records import Channel, ConsentState

OPT_OUT = "hs_email_optout"  # HubSpot's "unsubscribed from all e-mail"
CHANGED = "lastmodifieddate"
PAGE = 200  # the search's largest page
SEARCH_CAP = 10_000  # results one search reaches
REASON = "unsubscribed from all e-mail in HubSpot"


def opt_outs(api: HubSpotApi, since: datetime | None) -> Iterator[ConsentUpdate]:
    """Opt-outs of contacts changed since ``since`` (every one when None)."""
    start = since.replace(tzinfo=since.tzinfo or UTC) if since is not None else None
    while True:
        seen, last = 0, start
        for item in _search(api, start):
            seen += 1
            update = _update(item)
            if update is not None:
                last = update.at
                yield update
        if seen < SEARCH_CAP or last is None or last == start:
            return
        start = last  # one search reaches 10,000 results: the next goes on from here


def _search(api: HubSpotApi, since: datetime | None) -> Iterator[dict[str, object]]:
    filters: list[dict[str, str]] = [{"propertyName": OPT_OUT, "operator": "EQ", "value": "true"}]
    if since is not None:
        millis = str(round(since.timestamp() * 1000))
        filters.append({"propertyName": CHANGED, "operator": "GTE", "value": millis})
    after: str | None = None
    read = 0
    while read < SEARCH_CAP:
        body: dict[str, object] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": CHANGED, "direction": "ASCENDING"}],
            "properties": ["email", OPT_OUT, CHANGED],
            "limit": min(PAGE, SEARCH_CAP - read),
        }
        if after is not None:
            body["after"] = after
        page = api.search_contacts(body)
        results = [item for item in page.get("results") or () if isinstance(item, dict)]
        yield from results
        read += len(results)
        following = ((page.get("paging") or {}).get("next") or {}).get("after")
        if not results or not following:
            return
        after = str(following)


def _update(item: dict[str, object]) -> ConsentUpdate | None:
    properties = item.get("properties")
    if not isinstance(properties, dict):
        return None
    email = str(properties.get("email") or "").strip().lower()
    if not email or properties.get(OPT_OUT) != "true":
        return None
    at = _time(properties.get(CHANGED)) or _time(item.get("updatedAt")) or datetime.now(UTC)
    return ConsentUpdate(email, Channel.EMAIL, ConsentState.UNSUBSCRIBED, at, REASON)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_opt_out(api: HubSpotApi, email: str, subscriptions: Sequence[str]) -> str | None:
    """Unsubscribes ``email`` from each subscription type; why it failed, or None."""
    refused: list[str] = []
    for subscription in subscriptions:
        response = api.unsubscribe(email, subscription)
        if not response.is_success:
            refused.append(subscription)
    if not refused:
        return None
    statuses = {
        str(item.get("id")): str(item.get("status")) for item in api.subscription_statuses(email)
    }
    still = [s for s in refused if statuses.get(s) != "NOT_SUBSCRIBED"]
    if not still:
        return None  # refused because already unsubscribed
    return f"HubSpot refused to unsubscribe the contact from subscription type {still[0]}"
