"""Events into HubSpot's commerce objects: orders and carts with their line items,
associated with the contact.

HubSpot's workflows read objects, not events: an abandoned-cart workflow enrols a cart
(with its ``hs_cart_url``) associated with a contact, a post-purchase one an order, or
an order whose ``hs_fulfillment_status`` changed. So each event becomes a write of the
object it is about:

- placed order: its line items (batch create), then the order (batch create) with its
  properties and its associations to the contact (507) and the line items (513);
- fulfilled, cancelled, refunded order: a batch update of the order's statuses;
- started checkout: the cart, as the order (586, 590), with its ``hs_cart_url``;
  closed checkout: the cart archived (one not there is what was wanted: OK);
- ordered product: not taken, its order's line items carry it.

Idempotency. Batch upsert needs a property with unique values, and HubSpot's
``hs_external_order_id`` and ``hs_external_cart_id`` are not (the guides use them as
plain text), so crmsync finds the objects it made by a search on them (``IN``, 100
values a call) before creating: a resend after a lost answer finds the order and
creates nothing. The search index trails writes by a few seconds, which only a crash
right after a create and an immediate re-run could meet; the event ledger keeps every
other resend from happening at all. Line items go before their order, so a crash
between the two leaves unassociated line items (no workflow sees them), never an order
without its lines.

Contacts are found by e-mail (one batch read per 100 addresses); an event whose person
HubSpot has no contact for yet is REJECTED, saying so: crmsync's people push creates
contacts, and creates them before the run's events. A backfill's past placed orders go
with their true ``hs_external_created_date``, which a workflow filters on (HubSpot has
no flag that keeps workflows off an object); its past started checkouts are not sent.
A missing scope (403) stops the events with the scopes named; HubSpot's day spent
(``DailyLimitReached``) leaves the batch NOT_SENT through the core.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from connectors.hubspot import commerce_bodies as bodies
from connectors.hubspot.client import HubSpotAccessError, HubSpotApi, HubSpotApiError
from crmsync.contract import Outcome
from crmsync.errors import AuthError, TransientError
from crmsync.events import Event, EventKind, EventResult

PER_CALL = 100  # inputs per batch call, ids per search filter
REFUSED = "VALIDATION_ERROR"
NO_EMAIL = "HubSpot's commerce objects are associated with a contact by e-mail; none here"
NO_CONTACT = (
    "HubSpot has no contact with this e-mail yet (crmsync's people push creates it): "
    "the event was not sent"
)
NO_ORDER = "HubSpot has no order {0} (its placed order was not sent yet)"
Found = dict[tuple[str, str], str]  # (source, external id) -> HubSpot object id
T = TypeVar("T")


def chunks(items: Sequence[T], size: int = PER_CALL) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class CommerceSender:
    """Sends one batch of events as HubSpot commerce objects, one result per event."""

    def __init__(self, api: HubSpotApi) -> None:
        self._api = api

    def push(self, events: Sequence[Event]) -> list[EventResult]:
        try:
            results = self._push(events)
        except HubSpotAccessError as exc:
            if exc.status == 403:
                raise AuthError(
                    f"the HubSpot private app lacks a scope for orders, carts or line items "
                    f"({exc.message}); grant {bodies.SCOPES} under Settings > Integrations > "
                    "Private apps"
                ) from exc
            raise
        return [results[event.key] for event in events]

    def _push(self, events: Sequence[Event]) -> dict[str, EventResult]:
        results: dict[str, EventResult] = {}
        todo: list[Event] = []
        seen: set[str] = set()
        for event in events:
            if event.key in seen:
                continue  # the same event twice in a batch goes once; both get its result
            seen.add(event.key)
            early = _screen(event)
            if early is not None:
                results[event.key] = early
            else:
                todo.append(event)
        placed = [e for e in todo if e.kind is EventKind.PLACED_ORDER]
        started = [e for e in todo if e.kind is EventKind.STARTED_CHECKOUT]
        statuses = [e for e in todo if e.kind in bodies.STATUS_KINDS]
        contacts = self._contacts(placed + started + statuses)
        for event in placed + started:
            if (event.email or "").strip().lower() not in contacts:
                results[event.key] = _result(event, Outcome.REJECTED, NO_CONTACT)
        placed = [e for e in placed if e.key not in results]
        started = [e for e in started if e.key not in results]
        results.update(self._create(placed, bodies.ORDERS, contacts))
        made: Found = {  # the batch's own orders: HubSpot's search may not show them yet
            (e.source, e.record_id): str(results[e.key].remote_id)
            for e in placed
            if results[e.key].outcome is Outcome.OK
        }
        results.update(self._update_statuses(statuses, contacts, made))
        results.update(self._create(started, bodies.CARTS, contacts))
        closed = [e for e in todo if e.kind is EventKind.CHECKOUT_CLOSED]
        results.update(self._archive_carts(closed))
        return results

    # -- reads ---------------------------------------------------------------------

    def _contacts(self, events: Sequence[Event]) -> dict[str, str]:
        emails = sorted({(e.email or "").strip().lower() for e in events} - {""})
        found: dict[str, str] = {}
        for chunk in chunks(emails):
            found.update(self._api.ids_by_email(chunk))
        return found

    def _find(self, kind: str, events: Sequence[Event]) -> Found:
        """The objects of ``kind`` crmsync made for these events' records."""
        id_property = bodies.ORDER_ID if kind == bodies.ORDERS else bodies.CART_ID
        wanted = sorted({e.record_id for e in events})
        found: Found = {}
        for chunk in chunks(wanted):
            after: str | None = None
            while True:
                body = bodies.search_body(id_property, list(chunk), after)
                page = self._api.document("POST", f"/crm/v3/objects/{kind}/search", body)
                for item in page.get("results") or ():
                    properties = item.get("properties") or {}
                    key = (str(properties.get(bodies.STORE)), str(properties.get(id_property)))
                    found.setdefault(key, str(item.get("id")))
                following = ((page.get("paging") or {}).get("next") or {}).get("after")
                if not following or following == after:
                    break
                after = str(following)
        return found

    # -- writes ----------------------------------------------------------------------

    def _create(
        self, events: Sequence[Event], kind: str, contacts: Mapping[str, str]
    ) -> dict[str, EventResult]:
        """Orders or carts with their line items, those not there already."""
        results: dict[str, EventResult] = {}
        if not events:
            return results
        existing = self._find(kind, events)
        fresh: list[Event] = []
        for event in events:
            there = existing.get((event.source, event.record_id))
            if there is not None:
                results[event.key] = EventResult(event.key, Outcome.OK, there, "already there")
            elif not any(
                e.source == event.source and e.record_id == event.record_id for e in fresh
            ):
                fresh.append(event)
        for chunk in chunks(fresh):
            results.update(self._create_chunk(chunk, kind, contacts))
        for event in events:  # the same record twice in the batch: the first one's answer
            if event.key not in results:
                twin = next(
                    e for e in fresh if (e.source, e.record_id) == (event.source, event.record_id)
                )
                results[event.key] = EventResult(
                    event.key, results[twin.key].outcome, results[twin.key].remote_id
                )
        return results

    def _create_chunk(
        self, chunk: Sequence[Event], kind: str, contacts: Mapping[str, str]
    ) -> dict[str, EventResult]:
        line_ids, refused = self._line_items(chunk)
        is_order = kind == bodies.ORDERS
        to_contact = bodies.ORDER_TO_CONTACT if is_order else bodies.CART_TO_CONTACT
        to_line = bodies.ORDER_TO_LINE_ITEM if is_order else bodies.CART_TO_LINE_ITEM
        results: dict[str, EventResult] = {}
        inputs: list[dict[str, Any]] = []
        sent: list[int] = []
        for i, event in enumerate(chunk):
            if i in refused:
                results[event.key] = _result(
                    event, _outcome(refused[i]), f"line items: {refused[i]}"
                )
                continue
            contact = contacts[(event.email or "").strip().lower()]
            associations = [bodies.association(contact, to_contact)]
            associations += [bodies.association(ident, to_line) for ident in line_ids[i]]
            props = bodies.order_properties(event) if is_order else bodies.cart_properties(event)
            inputs.append(
                {"properties": props, "associations": associations, "objectWriteTraceId": str(i)}
            )
            sent.append(i)
        if not inputs:
            return results
        answer = self._batch(kind, "create", inputs)
        for i in sent:
            event = chunk[i]
            if isinstance(answer, str):
                results[event.key] = _result(event, _outcome(answer), answer)
            elif str(i) in answer[0]:
                results[event.key] = EventResult(event.key, Outcome.OK, answer[0][str(i)])
            else:
                reason = answer[1].get(str(i), "failed: HubSpot did not answer for it")
                results[event.key] = _result(event, _outcome(reason), reason)
        return results

    def _line_items(self, chunk: Sequence[Event]) -> tuple[dict[int, list[str]], dict[int, str]]:
        """The line items of the chunk's events, made: their ids per event (by place in
        the chunk), and why, for the events one of whose lines was not made."""
        lines = [
            (i, bodies.line_item(line, event.currency))
            for i, event in enumerate(chunk)
            for line in event.lines
        ]
        line_ids: dict[int, list[str]] = {i: [] for i in range(len(chunk))}
        refused: dict[int, str] = {}
        for part in chunks(lines):
            inputs = [
                {"properties": props, "objectWriteTraceId": str(n)}
                for n, (_, props) in enumerate(part)
            ]
            answer = self._batch(bodies.LINE_ITEMS, "create", inputs)
            for n, (owner, _) in enumerate(part):
                if isinstance(answer, str):
                    refused.setdefault(owner, answer)
                elif str(n) in answer[0]:
                    line_ids[owner].append(answer[0][str(n)])
                else:
                    reason = answer[1].get(str(n), "failed: a line item was not made")
                    refused.setdefault(owner, reason)
        return line_ids, refused

    def _update_statuses(
        self, events: Sequence[Event], contacts: Mapping[str, str], made: Found
    ) -> dict[str, EventResult]:
        """The statuses of orders crmsync made; for an order not there, REJECTED when its
        person has no contact (so its placed order was refused too), else FAILED (its
        placed order may go in a later run)."""
        results: dict[str, EventResult] = {}
        if not events:
            return results
        unknown = [e for e in events if (e.source, e.record_id) not in made]
        existing = {**(self._find(bodies.ORDERS, unknown) if unknown else {}), **made}
        changes: dict[str, dict[str, str]] = {}  # order id -> properties (merged per order)
        owners: dict[str, list[Event]] = {}
        for event in events:
            there = existing.get((event.source, event.record_id))
            if there is None:
                if (event.email or "").strip().lower() not in contacts:
                    results[event.key] = _result(event, Outcome.REJECTED, NO_CONTACT)
                else:
                    message = NO_ORDER.format(event.record_id)
                    results[event.key] = _result(event, Outcome.FAILED, message)
                continue
            changes.setdefault(there, {}).update(bodies.status_properties(event))
            owners.setdefault(there, []).append(event)
        ids = list(changes)
        for chunk in chunks(ids):
            inputs = [
                {"id": ident, "properties": changes[ident], "objectWriteTraceId": ident}
                for ident in chunk
            ]
            answer = self._batch(bodies.ORDERS, "update", inputs)
            for ident in chunk:
                for event in owners[ident]:
                    if isinstance(answer, str):
                        results[event.key] = _result(event, _outcome(answer), answer)
                    elif ident in answer[0]:
                        results[event.key] = EventResult(event.key, Outcome.OK, ident)
                    else:
                        reason = answer[1].get(ident, "HubSpot did not answer for it")
                        results[event.key] = _result(event, Outcome.FAILED, reason)
        return results

    def _archive_carts(self, events: Sequence[Event]) -> dict[str, EventResult]:
        results: dict[str, EventResult] = {}
        if not events:
            return results
        existing = self._find(bodies.CARTS, events)
        ids: list[str] = []
        for event in events:
            there = existing.get((event.source, event.record_id))
            if there is None:
                results[event.key] = EventResult(event.key, Outcome.OK, message="no cart to close")
            elif there not in ids:
                ids.append(there)
        for chunk in chunks(ids):
            body = {"inputs": [{"id": ident} for ident in chunk]}
            try:
                self._api.document("POST", f"/crm/v3/objects/{bodies.CARTS}/batch/archive", body)
                problem = ""
            except (TransientError, HubSpotApiError) as exc:
                problem = str(exc)
            for event in events:
                there = existing.get((event.source, event.record_id))
                if there in chunk:
                    outcome = Outcome.FAILED if problem else Outcome.OK
                    results[event.key] = EventResult(event.key, outcome, there, problem)
        return results

    def _batch(
        self, kind: str, verb: str, inputs: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, str], dict[str, str]] | str:
        """trace id -> object id, trace id -> why refused; or why the whole call failed
        ("refused ..." when HubSpot refused it, which sending again would not change)."""
        path = f"/crm/v3/objects/{kind}/batch/{verb}"
        try:
            body = {"inputs": list(inputs)}
            response = self._api.send("POST", path, body, resend=verb != "create")
        except TransientError as exc:
            return f"HubSpot did not answer: {exc}"
        if not response.is_success:
            error = HubSpotApiError.from_response(response)
            prefix = "refused" if error.status == 400 else "failed"
            return f"{prefix} by HubSpot: {error.message}"
        try:
            document = response.json()
        except ValueError:
            return "failed: HubSpot's answer is not JSON"
        made = {
            str(item.get("objectWriteTraceId")): str(item["id"])
            for item in document.get("results") or ()
            if item.get("id") is not None
        }
        errors: dict[str, str] = {}
        for error in document.get("errors") or ():
            prefix = "refused" if error.get("category") == REFUSED else "failed"
            message = f"{prefix} by HubSpot: {error.get('message') or error.get('category')}"
            for trace in (error.get("context") or {}).get("objectWriteTraceId") or ():
                errors[str(trace)] = message
        return made, errors


def _screen(event: Event) -> EventResult | None:
    """Why an event is answered without a call, or None."""
    if event.kind not in bodies.EVENT_NAMES:
        return _result(event, Outcome.REJECTED, f"HubSpot takes no {event.kind} events")
    if event.kind is EventKind.STARTED_CHECKOUT and event.historical:
        return _result(event, Outcome.OK, "a past checkout: not sent (a workflow would fire)")
    needs_contact = event.kind in (EventKind.PLACED_ORDER, EventKind.STARTED_CHECKOUT)
    if needs_contact and not (event.email or "").strip():
        return _result(event, Outcome.REJECTED, NO_EMAIL)
    return None


def _outcome(reason: str) -> Outcome:
    """REJECTED for what HubSpot refused (sending it again changes nothing), else FAILED."""
    return Outcome.REJECTED if reason.startswith("refused") else Outcome.FAILED


def _result(event: Event, outcome: Outcome, message: str) -> EventResult:
    return EventResult(event.key, outcome, message=message)
