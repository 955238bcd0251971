"""E-commerce events: what the store's orders and carts mean for the marketing tools'
automations (a placed order, an abandoned checkout, a fulfilment, a refund).

The core derives them from staged orders and carts (``engine.events`` does, per run) and
hands them to destinations that take events (``EventDestination``). Each event has a
stable ``key``: the same order's same event always has the same key, so the event
ledger (``state``) sends it to a destination once, whatever re-runs, crashes and
backfills happen, and vendors that de-duplicate get it as their unique id. An event is
derived again only when its record changes in a way that makes a new event (an order
refunded after it was placed is a new *refunded order*; a re-exported unchanged order is
nothing new).

Every time is the platform's instant, in UTC (``occurred_at``): a store in
Europe/Istanbul gets its review requests when the order was really delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from crmsync.contract import Outcome


class EventKind(StrEnum):
    PLACED_ORDER = "placed_order"  # an order counted for the first time
    ORDERED_PRODUCT = "ordered_product"  # one per line of a placed order
    FULFILLED_ORDER = "fulfilled_order"  # the order reached fulfilled/delivered
    CANCELLED_ORDER = "cancelled_order"
    REFUNDED_ORDER = "refunded_order"  # a refund (whole or part) was recorded
    STARTED_CHECKOUT = "started_checkout"  # a cart left open past the abandonment time
    CHECKOUT_CLOSED = "checkout_closed"  # that cart converted or expired: drop it remotely


@dataclass(frozen=True, slots=True)
class EventLine:
    """A line of the order or cart an event carries."""

    product_id: str  # the source's product id, else its SKU, else the product name
    name: str
    quantity: int
    unit_price: Decimal
    sku: str | None = None
    discount: Decimal = Decimal(0)
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One event for one person, as every destination gets it."""

    key: str  # stable and unique: "<kind>:<source>:<order or cart id>[:<line no>]"
    kind: EventKind
    person_key: str
    occurred_at: datetime  # UTC: when it happened at the platform
    source: str
    record_id: str  # the order's or cart's id at the source
    currency: str
    value: Decimal | None = None  # the order's total (refund: the amount refunded)
    lines: tuple[EventLine, ...] = ()
    email: str | None = None
    phone: str | None = None
    customer_id: str | None = None  # the source's customer id, when the record has one
    checkout_url: str | None = None  # started checkout: where the person can finish
    historical: bool = False  # a backfill's past event: no automation should fire on it
    properties: Mapping[str, Any] = field(default_factory=dict)  # status, discount, ...


@dataclass(frozen=True, slots=True)
class EventResult:
    """A destination's answer for one event (the same outcomes as for people; PENDING is
    not used for events)."""

    key: str
    outcome: Outcome
    remote_id: str | None = None
    message: str = ""


@runtime_checkable
class EventDestination(Protocol):
    """A destination that takes events (optional, beside ``Destination``).

    ``event_names`` maps the kinds it takes to the names it sends them under (defaults
    from the connector, overridable in its configuration); a kind it does not take is
    never handed to it. ``push_events`` sends one batch of at most ``max_event_batch``
    events and returns exactly one result per event, in any order; a transient failure
    is FAILED (retried by later runs under the same cap as people), a refusal REJECTED.
    """

    max_event_batch: int

    def event_names(self) -> Mapping[EventKind, str]: ...

    def push_events(self, events: Sequence[Event]) -> list[EventResult]: ...
