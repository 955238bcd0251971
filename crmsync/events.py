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

A destination that would otherwise ask its vendor what the state store already knows
(the person's id there, whether an order could be there at all) says so with
``wants_event_facts``; the core then hands each event its ``EventFacts`` for that
destination.
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


# a cart's events; the other kinds are an order's
CART_KINDS = frozenset({EventKind.STARTED_CHECKOUT, EventKind.CHECKOUT_CLOSED})


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the state store knows of one event at the one destination it is handed to,
    so the destination need not ask its vendor. Each fact is proven by the state store; a
    fact not known keeps its default, which means "find out as without facts"."""

    person_remote_id: str | None = None  # the person's id there (the people's ledger)
    record_remote_id: str | None = None  # the id there of the event's order or cart: the
    # destination's answer to the record's opening event (placed order, started checkout)
    record_never_sent: bool = False  # no event of this order or cart was ever sent there
    # from this state database (none acknowledged, in flight, failed or refused); never
    # claimed in a backfill, which is also how a vendor is reconciled with the database
    no_history: bool = False  # before this run, this state database had sent no event at
    # all there: what the vendor already holds may come from elsewhere (another database)


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
    facts: EventFacts | None = None  # set by the core per destination (wants_event_facts);
    # not part of the event's payload


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

    A destination may also set ``wants_event_facts = True`` (optional, not a member of
    this protocol): it then gets each event with its ``facts`` filled in. An exception
    out of ``push_events`` leaves its batch "maybe sent" (in flight) for those facts,
    since the destination may have written part of it before it stopped.
    """

    max_event_batch: int

    def event_names(self) -> Mapping[EventKind, str]: ...

    def push_events(self, events: Sequence[Event]) -> list[EventResult]: ...
