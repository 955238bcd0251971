"""E-commerce events to Klaviyo: orders and carts as Klaviyo's standard metrics.

Every batch goes out in as few bulk create calls as Klaviyo allows (1,000 events and
5 MB a call): the events of one person share one entry, which names the profile by
e-mail and phone only, so Klaviyo finds or creates it and never subscribes anybody. Each
event carries its stable key as ``unique_id`` (Klaviyo records an event once per profile,
metric and unique id, so a re-send after a lost answer is harmless), its true time, its
``value`` with the currency, and Klaviyo's property names for the line items (``Items``
with ``ProductID``, ``ProductName``, ``SKU``, ``Quantity``, ``ItemPrice``, ``RowTotal``,
``Categories``, ``ImageURL``, ``ProductURL``; ``CheckoutURL`` for a started checkout). A
backfill's past events go with ``backfill: true``: Klaviyo records them and no flow
fires on them.

Klaviyo refuses a bulk call as a whole and points at what it found wrong. The events it
pointed at are REJECTED and the rest go again in one more call; a transient failure that
outlived the seam's retries (429 with ``Retry-After`` included) leaves the call's events
FAILED, for a later run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson

from connectors.klaviyo.client import KlaviyoApi
from connectors.klaviyo.payloads import klaviyo_time
from crmsync.contract import Outcome
from crmsync.errors import TransientError
from crmsync.events import Event, EventKind, EventLine, EventResult

ENVELOPE = 256  # bytes of a request around its entries
ENTRY_OVERHEAD = 160  # an entry's own keys, its profile's and the separators
MAX_ROUNDS = 4  # calls for one chunk: a refusal names at least one entry, so few suffice
EARLIEST = datetime(1990, 1, 2, tzinfo=UTC)  # Klaviyo: an event's time is after 1990
FUTURE = timedelta(days=365)  # ... and at most a year ahead
_ENTRIES = "/data/attributes/events-bulk-create/data/"
_POINTER = re.compile(rf"^{_ENTRIES}(\d+)(?:/|$)")  # an entry: its profile or all its events
_EVENT_POINTER = re.compile(rf"^{_ENTRIES}\d+/attributes/events/data/(\d+)(?:/|$)")  # one event

Identity = tuple[str | None, str | None]  # (e-mail folded, phone)


@dataclass(frozen=True, slots=True)
class Prepared:
    """One event as it goes into a bulk call."""

    event: Event
    identity: Identity
    profile: dict[str, Any]
    resource: dict[str, Any]
    size: int


def money(amount: Decimal) -> float:
    return float(amount)


def row_total(line: EventLine) -> Decimal:
    return line.unit_price * line.quantity - line.discount


def item(line: EventLine) -> dict[str, Any]:
    """One line as Klaviyo's e-commerce properties name it."""
    found: dict[str, Any] = {
        "ProductID": line.product_id,
        "ProductName": line.name,
        "Quantity": line.quantity,
        "ItemPrice": money(line.unit_price),
        "RowTotal": money(row_total(line)),
    }
    if line.sku:
        found["SKU"] = line.sku
    if line.categories:
        found["Categories"] = list(line.categories)
    if line.image_url:
        found["ImageURL"] = line.image_url
    if line.url:
        found["ProductURL"] = line.url
    if line.discount:
        found["Discount"] = money(line.discount)
    return found


def plain(value: Any) -> Any:
    """A property value as JSON takes it (Decimal as number, time as ISO 8601)."""
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, datetime):
        return klaviyo_time(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    return value


def properties_of(event: Event) -> dict[str, Any]:
    """The event's properties: the source's extras, then Klaviyo's standard names."""
    found: dict[str, Any] = {str(name): plain(v) for name, v in event.properties.items()}
    record = "CheckoutId" if event.kind is EventKind.STARTED_CHECKOUT else "OrderId"
    found[record] = event.record_id
    if event.kind is EventKind.ORDERED_PRODUCT and len(event.lines) == 1:
        found.update(item(event.lines[0]))
    elif event.lines:
        found["Items"] = [item(line) for line in event.lines]
        found["ItemNames"] = [line.name for line in event.lines]
        categories = sorted({c for line in event.lines for c in line.categories})
        if categories:
            found["Categories"] = categories
    if event.checkout_url:
        found["CheckoutURL"] = event.checkout_url
    return found


def value_of(event: Event) -> Decimal | None:
    if event.value is not None:
        return event.value
    if event.kind is EventKind.ORDERED_PRODUCT and len(event.lines) == 1:
        return row_total(event.lines[0])
    return None


def event_resource(event: Event, metric: str) -> dict[str, Any]:
    """The event's entry in a bulk call (without its profile)."""
    attributes: dict[str, Any] = {
        "properties": properties_of(event),
        "time": klaviyo_time(event.occurred_at),
        "unique_id": event.key,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
    }
    value = value_of(event)
    if value is not None:
        attributes["value"] = money(value)
        if event.currency:
            attributes["value_currency"] = event.currency
    if event.historical:
        attributes["backfill"] = True
    return {"type": "event", "attributes": attributes}


def profile_of(event: Event) -> tuple[Identity, dict[str, Any]] | None:
    """Who the event is about, by e-mail and phone only (never a subscription)."""
    email = (event.email or "").strip() or None
    phone = (event.phone or "").strip() or None
    if email is None and phone is None:
        return None
    attributes: dict[str, Any] = {}
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    return (email.casefold() if email else None, phone), attributes


def body_of(entries: Sequence[Sequence[Prepared]]) -> dict[str, Any]:
    data = [
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": group[0].profile}},
                "events": {"data": [p.resource for p in group]},
            },
        }
        for group in entries
    ]
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": data}},
        }
    }


def grouped(chunk: Sequence[Prepared]) -> list[list[Prepared]]:
    """The chunk's events, one entry per person (first appearance order)."""
    entries: dict[Identity, list[Prepared]] = {}
    for prepared in chunk:
        entries.setdefault(prepared.identity, []).append(prepared)
    return list(entries.values())


def blamed(response: httpx.Response, entries: Sequence[Sequence[Prepared]]) -> dict[str, str]:
    """Event key -> Klaviyo's reason, for the events a refusal points at."""
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return {}
    found: dict[str, str] = {}
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        source = error.get("source")
        pointer = source.get("pointer") if isinstance(source, dict) else None
        matched = _POINTER.match(pointer) if isinstance(pointer, str) else None
        if matched is None or int(matched.group(1)) >= len(entries):
            continue
        group = entries[int(matched.group(1))]
        detail = str(error.get("detail") or error.get("title") or "refused")[:300]
        at_event = _EVENT_POINTER.match(str(pointer))
        if at_event is not None and int(at_event.group(1)) < len(group):
            group = [group[int(at_event.group(1))]]
        for prepared in group:
            found.setdefault(prepared.event.key, f"Klaviyo refused the event: {detail}")
    return found


def refusal(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or [{}]
        detail = errors[0].get("detail") or errors[0].get("title") or ""
    except (ValueError, AttributeError, IndexError, TypeError):
        detail = response.text[:300]
    return f"Klaviyo refused the call ({response.status_code}): {str(detail)[:300]}"


class EventSender:
    """Sends batches of events through the bulk create endpoint."""

    def __init__(
        self,
        api: KlaviyoApi,
        names: Mapping[EventKind, str],
        per_call: int,
        bytes_per_call: int,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._api = api
        self._names = dict(names)
        self._per_call = per_call
        self._bytes = bytes_per_call - ENVELOPE
        self._now = clock or (lambda: datetime.now(UTC))

    def push(self, events: Sequence[Event]) -> list[EventResult]:
        results: dict[str, EventResult] = {}
        ready: list[Prepared] = []
        seen: set[str] = set()
        for event in events:
            if event.key in seen:
                continue  # the same event twice in a batch goes once; both get its result
            seen.add(event.key)
            prepared = self._prepare(event)
            if isinstance(prepared, EventResult):
                results[event.key] = prepared
            else:
                ready.append(prepared)
        for chunk in self._chunks(ready):
            results.update(self._send(chunk))
        return [results[event.key] for event in events]

    def _prepare(self, event: Event) -> Prepared | EventResult:
        metric = self._names.get(event.kind)
        if metric is None:
            return _result(event, Outcome.REJECTED, f"Klaviyo is not sent {event.kind} events")
        who = profile_of(event)
        if who is None:
            return _result(event, Outcome.REJECTED, "Klaviyo needs an e-mail or phone")
        when = event.occurred_at
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if not EARLIEST <= when <= self._now() + FUTURE:
            return _result(
                event,
                Outcome.REJECTED,
                f"Klaviyo takes event times from 1990 to a year ahead, not {klaviyo_time(when)}",
            )
        identity, profile = who
        resource = event_resource(event, metric)
        size = len(orjson.dumps(resource)) + len(orjson.dumps(profile)) + ENTRY_OVERHEAD
        if size > self._bytes:
            return _result(
                event,
                Outcome.REJECTED,
                f"the event takes {size:,} bytes; a Klaviyo call takes at most {self._bytes:,}",
            )
        return Prepared(event, identity, profile, resource, size)

    def _chunks(self, ready: Sequence[Prepared]) -> list[list[Prepared]]:
        chunks: list[list[Prepared]] = []
        current: list[Prepared] = []
        used = 0
        for prepared in ready:
            if current and (len(current) == self._per_call or used + prepared.size > self._bytes):
                chunks.append(current)
                current, used = [], 0
            current.append(prepared)
            used += prepared.size
        if current:
            chunks.append(current)
        return chunks

    def _send(self, chunk: Sequence[Prepared]) -> dict[str, EventResult]:
        results: dict[str, EventResult] = {}
        pending = list(chunk)
        for _ in range(MAX_ROUNDS):
            entries = grouped(pending)
            try:
                response = self._api.create_events(body_of(entries))
            except TransientError as exc:
                results.update(_all(pending, Outcome.FAILED, str(exc)))
                return results
            if response.is_success:
                results.update(_all(pending, Outcome.OK, ""))
                return results
            bad = blamed(response, entries)
            if not bad:
                results.update(_all(pending, Outcome.REJECTED, refusal(response)))
                return results
            for prepared in pending:
                if prepared.event.key in bad:
                    key = prepared.event.key
                    results[key] = EventResult(key, Outcome.REJECTED, message=bad[key])
            pending = [p for p in pending if p.event.key not in bad]
            if not pending:
                return results
        message = f"Klaviyo refused {MAX_ROUNDS} calls in a row for this batch"
        results.update(_all(pending, Outcome.FAILED, message))
        return results


def _result(event: Event, outcome: Outcome, message: str) -> EventResult:
    return EventResult(event.key, outcome, message=message)


def _all(chunk: Sequence[Prepared], outcome: Outcome, message: str) -> dict[str, EventResult]:
    return {p.event.key: EventResult(p.event.key, outcome, message=message) for p in chunk}
