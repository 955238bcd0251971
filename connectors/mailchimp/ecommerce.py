"""Events into Mailchimp's e-commerce API: a store per source, its catalogue, orders, carts.

Mailchimp's automations read e-commerce *objects*, not events: an abandoned-cart email is
a cart with a ``checkout_url`` left alone, an order notification is an order whose
``financial_status`` or ``fulfillment_status`` changed, product recommendations come from
the orders' lines. So each event becomes the upsert of the objects it is about:

- placed order: the variants of its lines (PUT; a product Mailchimp lacks is PUT with
  the variant), then the order with its lines and its customer (PUT, which upserts the
  customer with ``opt_in_status: false``);
- fulfilled, cancelled, refunded order: a PATCH of the order's statuses;
- started checkout: the cart with its lines and ``checkout_url`` (POST; a cart already
  there, from a resend, is patched, or replaced when its lines differ); closed checkout:
  the cart deleted (404: already gone, which is what was wanted);
- ordered product: nothing of its own, its order carries the lines.

A push first ensures each source's store (found again after a crash, created once), then
sends the batch's new variants side by side, then its records side by side (one record's
events in order, so a placed order lands before its refund). Historical events (a
backfill's) are sent while the store's ``is_syncing`` is true, which Mailchimp documents
as pausing the store's automations, and the flag is set back after them (and, should a
crash leave it set, when the store is next ensured). Results are per event: an object
refused fails its event only; when every event failed transiently Mailchimp is down and
``TransientError`` stops the run, as for people.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.mailchimp import ecommerce_bodies as bodies
from connectors.mailchimp.client import MailchimpApiError
from connectors.mailchimp.ecommerce_api import EcommerceApi
from connectors.mailchimp.ecommerce_stores import Stores, StoreSettings
from crmsync.contract import Outcome
from crmsync.errors import ConfigError, ConnectorError, TransientError
from crmsync.events import Event, EventKind, EventResult

log = logging.getLogger(__name__)

# the names the kinds are sent under: the object each one writes in Mailchimp
EVENT_NAMES: Mapping[EventKind, str] = {
    EventKind.PLACED_ORDER: "order",
    EventKind.FULFILLED_ORDER: "order.fulfillment_status",
    EventKind.CANCELLED_ORDER: "order.financial_status",
    EventKind.REFUNDED_ORDER: "order.financial_status",
    EventKind.STARTED_CHECKOUT: "cart",
    EventKind.CHECKOUT_CLOSED: "cart (deleted)",
}
_STATUS_KINDS = frozenset(
    {EventKind.FULFILLED_ORDER, EventKind.CANCELLED_ORDER, EventKind.REFUNDED_ORDER}
)
_WITH_LINES = frozenset({EventKind.PLACED_ORDER, EventKind.STARTED_CHECKOUT})
NO_EMAIL = "Mailchimp e-commerce needs the customer's e-mail address"


@dataclass(frozen=True, slots=True)
class _Sent:
    """One event's result, and whether a transient failure made it."""

    result: EventResult
    transient: bool = False


class EcommerceEvents:
    """The e-commerce side of one Mailchimp destination (one instance per destination)."""

    def __init__(self, api: EcommerceApi, settings: StoreSettings, pool: Executor) -> None:
        self._api = api
        self._settings = settings
        self._pool = pool
        self._stores = Stores(api, settings)
        self._variants: set[str] = set()  # digests of variant bodies Mailchimp confirmed
        self._lock = threading.Lock()

    def push(self, events: Sequence[Event]) -> list[EventResult]:
        sent: dict[str, _Sent] = {}
        by_source: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            screened = _screen(event)
            if screened is not None:
                sent[event.key] = _Sent(screened)
            else:
                by_source[event.source].append(event)
        for source, found in by_source.items():
            sent.update(self._push_source(source, found))
        _raise_if_down([sent[event.key] for event in events])
        return [sent[event.key].result for event in events]

    # -- stores --------------------------------------------------------------------

    def _push_source(self, source: str, events: list[Event]) -> dict[str, _Sent]:
        try:
            store = self._stores.ensure(source, events[0].currency)
        except TransientError as exc:
            return {e.key: _Sent(_failed(e, f"store: {exc}"), True) for e in events}
        except MailchimpApiError as exc:
            return {e.key: _Sent(_failed(e, f"store: {exc}")) for e in events}
        historical = [event for event in events if event.historical]
        live = [event for event in events if not event.historical]
        out: dict[str, _Sent] = {}
        if historical:
            out.update(self._send_paused(source, store, historical))
        if live:
            out.update(self._send(store, live))
        return out

    def _send_paused(self, source: str, store: str, events: list[Event]) -> dict[str, _Sent]:
        """Historical events, with the store's automations paused while they land."""
        try:
            self._stores.pause(store)
        except (TransientError, MailchimpApiError) as exc:
            # never sent unpaused: an old order must not start a review request
            message = f"could not pause the store's automations: {exc}"
            transient = isinstance(exc, TransientError)
            return {e.key: _Sent(_failed(e, message), transient) for e in events}
        try:
            return self._send(store, events)
        finally:
            self._stores.resume(source, store)

    # -- sending -------------------------------------------------------------------

    def _send(self, store: str, events: list[Event]) -> dict[str, _Sent]:
        refused = self._upsert_variants(store, events)
        records: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            records[event.record_id].append(event)
        groups = [sorted(group, key=_order_of) for group in records.values()]
        out: dict[str, _Sent] = {}
        for answers in self._pool.map(lambda g: self._send_record(store, g, refused), groups):
            out.update(answers)
        return out

    def _send_record(
        self, store: str, events: list[Event], refused: Mapping[str, _Problem]
    ) -> dict[str, _Sent]:
        """One record's events in order; after a failure its later events wait (a refund
        of an order Mailchimp does not have would only fail again)."""
        out: dict[str, _Sent] = {}
        blocked: _Sent | None = None
        for event in events:
            if blocked is not None:
                message = f"waits for {blocked.result.key}: {blocked.result.message}"
                out[event.key] = _Sent(_failed(event, message), blocked.transient)
                continue
            problem = _line_problem(event, refused)
            answer = (
                _Sent(_failed(event, problem.message), problem.transient)
                if problem is not None
                else self._apply(store, event)
            )
            out[event.key] = answer
            if answer.result.outcome is not Outcome.OK:
                blocked = answer
        return out

    def _apply(self, store: str, event: Event) -> _Sent:
        try:
            return _Sent(self._write(store, event))
        except TransientError as exc:
            return _Sent(_failed(event, str(exc)), True)
        except MailchimpApiError as exc:
            return _Sent(EventResult(event.key, Outcome.REJECTED, message=str(exc)))
        except ConfigError:
            raise
        except ConnectorError as exc:
            return _Sent(_failed(event, str(exc)))

    def _write(self, store: str, event: Event) -> EventResult:
        key, record = event.key, event.record_id
        if event.kind is EventKind.PLACED_ORDER:
            self._api.put_order(store, record, bodies.order_body(event))
            return EventResult(key, Outcome.OK, record, "order upserted")
        if event.kind in _STATUS_KINDS:
            try:
                self._api.patch_order(store, record, bodies.status_body(event))
            except MailchimpApiError as exc:
                if exc.status != 404:
                    raise
                return _failed(event, "the order is not in Mailchimp yet (its placed order first)")
            return EventResult(key, Outcome.OK, record, "order statuses updated")
        if event.kind is EventKind.STARTED_CHECKOUT:
            return self._upsert_cart(store, event)
        if event.kind is EventKind.CHECKOUT_CLOSED:
            gone = self._delete_cart(store, record)
            return EventResult(key, Outcome.OK, record, "already gone" if gone else "cart removed")
        return EventResult(key, Outcome.REJECTED, message=f"Mailchimp takes no {event.kind}")

    def _upsert_cart(self, store: str, event: Event) -> EventResult:
        """Creates the cart; one there already (a resend, a lost answer) is patched when
        its lines are the same, so its abandoned-cart automation runs on undisturbed, and
        replaced whole when they differ (a cart's lines cannot be matched by a PATCH)."""
        body, record = bodies.cart_body(event), event.record_id
        try:
            self._api.add_cart(store, body)
            return EventResult(event.key, Outcome.OK, record, "cart created")
        except MailchimpApiError as refused:
            if refused.status != 400:
                raise
            try:
                found = self._api.get_cart_lines(store, record)
            except MailchimpApiError as exc:
                if exc.status == 404:  # not there: the cart itself was refused
                    raise refused from exc
                raise
        if bodies.same_lines(found.get("lines"), body["lines"]):
            self._api.patch_cart(store, record, bodies.cart_header(body))
            return EventResult(event.key, Outcome.OK, record, "cart updated")
        self._delete_cart(store, record)
        self._api.add_cart(store, body)
        return EventResult(event.key, Outcome.OK, record, "cart replaced")

    def _delete_cart(self, store: str, cart: str) -> bool:
        """Deletes a cart; True when it was gone already."""
        try:
            self._api.delete_cart(store, cart)
        except MailchimpApiError as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # -- the catalogue -------------------------------------------------------------

    def _upsert_variants(self, store: str, events: Iterable[Event]) -> dict[str, _Problem]:
        """The batch's variants Mailchimp does not have from this instance, side by side;
        the answer holds the problems, by variant key, of those that failed."""
        wanted: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {}
        for event in events:
            if event.kind not in _WITH_LINES or event.email is None:
                continue
            for line in event.lines:
                variant = bodies.variant_body(line)
                digest = _digest(store, line.product_id, variant)
                if digest not in self._variants:
                    item = (line.product_id, variant["id"], variant, bodies.product_body(line))
                    wanted.setdefault(_variant_key(line.product_id, variant["id"]), item)
        keys = list(wanted)
        answers = self._pool.map(lambda k: self._upsert_variant(store, *wanted[k]), keys)
        problems: dict[str, _Problem] = {}
        for key, problem in zip(keys, answers, strict=True):
            if problem is not None:
                problems[key] = problem
        return problems

    def _upsert_variant(
        self,
        store: str,
        product: str,
        variant: str,
        body: dict[str, Any],
        product_body: dict[str, Any],
    ) -> _Problem | None:
        try:
            try:
                self._api.put_variant(store, product, variant, body)
            except MailchimpApiError as exc:
                if exc.status != 404:
                    raise
                self._api.put_product(store, product, product_body)  # a new product
        except TransientError as exc:
            return _Problem(f"product {product}: {exc}", True)
        except MailchimpApiError as exc:
            return _Problem(f"product {product}: {exc}", False)
        with self._lock:
            self._variants.add(_digest(store, product, body))
        return None


@dataclass(frozen=True, slots=True)
class _Problem:
    message: str
    transient: bool


def _screen(event: Event) -> EventResult | None:
    """The result of an event that is not sent, or None when it goes."""
    if event.kind is EventKind.ORDERED_PRODUCT:
        return EventResult(event.key, Outcome.OK, message="carried by its order's lines")
    if not event.email:
        if event.kind is EventKind.CHECKOUT_CLOSED:
            return EventResult(event.key, Outcome.OK, message="never sent to Mailchimp")
        return EventResult(event.key, Outcome.REJECTED, message=NO_EMAIL)
    return None


def _line_problem(event: Event, refused: Mapping[str, _Problem]) -> _Problem | None:
    if event.kind not in _WITH_LINES:
        return None
    for line in event.lines:
        found = refused.get(_variant_key(line.product_id, bodies.variant_id(line)))
        if found is not None:
            return found
    return None


_RANK = {
    EventKind.STARTED_CHECKOUT: 0,
    EventKind.PLACED_ORDER: 1,
    EventKind.FULFILLED_ORDER: 2,
    EventKind.REFUNDED_ORDER: 3,
    EventKind.CANCELLED_ORDER: 3,
    EventKind.CHECKOUT_CLOSED: 4,
}


def _order_of(event: Event) -> tuple[Any, ...]:
    """A record's events in the order they happened; at one instant, a placed order
    before its later statuses."""
    return (event.occurred_at, _RANK.get(event.kind, 5))


def _variant_key(product: str, variant: str) -> str:
    return f"{product}\x00{variant}"


def _digest(store: str, product: str, body: Mapping[str, Any]) -> str:
    encoded = orjson.dumps([store, product, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()


def _failed(event: Event, message: str) -> EventResult:
    return EventResult(event.key, Outcome.FAILED, message=message)


def _raise_if_down(sent: Sequence[_Sent]) -> None:
    if sent and all(item.transient for item in sent):
        raise TransientError(f"Mailchimp is unreachable: {sent[0].result.message}")
