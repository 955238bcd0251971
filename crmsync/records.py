"""Canonical records: what every source produces, whatever the platform calls things.

Records are plain frozen dataclasses with slots: a source may yield millions of them, so
they stay cheap, and are built at about the cost of unfrozen ones (``frozen.quick_init``).
Values are already normalised when a record exists (see ``normalize``): e-mails
lower-cased, phones E.164, money as ``Decimal`` in an ISO 4217 currency, times
timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from crmsync.frozen import quick_init


class Stream(StrEnum):
    """The three kinds of records a source can provide."""

    CUSTOMERS = "customers"
    ORDERS = "orders"
    CARTS = "carts"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class ConsentState(StrEnum):
    """Marketing consent for one channel.

    ``SUBSCRIBED`` is an explicit opt-in; ``UNSUBSCRIBED`` an explicit opt-out (including
    cleaned/bounced/forgotten seen in a destination); ``NONE`` means nothing was recorded,
    which is never treated as consent.
    """

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    NONE = "none"


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


@quick_init
@dataclass(frozen=True, slots=True)
class Consent:
    """One channel's consent as a source states it, with the time it was given or withdrawn."""

    state: ConsentState
    at: datetime | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Customer:
    external_id: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    postal_code: str | None = None
    address1: str | None = None
    language: str | None = None
    birthday: date | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    email_consent: Consent | None = None
    sms_consent: Consent | None = None
    deleted: bool = False


@quick_init
@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str | None
    product: str | None
    category: str | None
    quantity: int
    unit_price: Decimal
    discount: Decimal = Decimal(0)  # total discount on this line, not per unit


@quick_init
@dataclass(frozen=True, slots=True)
class Order:
    external_id: str
    customer_external_id: str | None
    email: str | None  # guest checkouts carry only an e-mail
    placed_at: datetime
    status: OrderStatus
    currency: str
    total: Decimal
    discount_total: Decimal = Decimal(0)
    refunded_total: Decimal = Decimal(0)
    updated_at: datetime | None = None
    lines: tuple[OrderLine, ...] = field(default_factory=tuple)
    # when the order reached each status at the platform (refunded: its latest refund),
    # where the source says so; events are timed by updated_at otherwise
    fulfilled_at: datetime | None = None
    cancelled_at: datetime | None = None
    refunded_at: datetime | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class CartItem:
    sku: str | None
    product: str | None
    category: str | None
    quantity: int
    unit_price: Decimal


@quick_init
@dataclass(frozen=True, slots=True)
class Cart:
    external_id: str
    customer_external_id: str | None
    email: str | None
    currency: str
    value: Decimal
    created_at: datetime | None = None
    updated_at: datetime | None = None
    checkout_url: str | None = None
    converted: bool = False
    items: tuple[CartItem, ...] = field(default_factory=tuple)


Record = Customer | Order | Cart


class IssueAction(StrEnum):
    QUARANTINED = "quarantined"  # the record was not staged; the operator must fix it at the source
    CORRECTED = "corrected"  # the record was staged with a value changed (e.g. a field truncated)


@dataclass(frozen=True, slots=True)
class RecordIssue:
    """Something wrong with one source record, kept so ``crmsync status`` can show it.

    A quarantined record is not staged (the rest of its batch is); a corrected one is
    staged as well, and the issue says what was changed.
    """

    stream: Stream
    external_id: str | None
    action: IssueAction
    reason: str
    field: str = ""
    excerpt: str = ""  # a short, truncated view of the raw record for the operator
