"""Staging rows: each canonical record as one tuple in a fixed column order, with the
digest of its content, built once per record and written by the driver as it is.

The content hash must stay what earlier versions stored, or a re-read after an upgrade
would re-stage every record: it is the BLAKE2b-128 of ``orjson`` of ``[content, lines]``
with sorted keys, where ``content`` is the row as a dict without ``staged_at``,
``content_hash`` and ``person_key``, and ``lines`` (orders only) the order's line rows as
dicts. So each record's content is built as a dict with its keys in sorted order (the
``*_CONTENT`` tuples name them, for the SQL), hashed as it is, and written as the tuple
of its values. An order's status times (``ORDER_TIMES``, migration 0010) are written
after its content and hashed with it, in their sorted places, only when the source gives
one: an order without them keeps the digest it had before they existed. A birthday is
kept as its ISO text: ``orjson`` writes a date exactly so, and SQLite stores it so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from crmsync.normalize import minor_unit_exponent
from crmsync.records import Cart, Customer, Order, Stream
from state.timeutil import to_ms

NOT_COUNTED = ("cancelled", "refunded")  # order statuses left out of counts and spend

# not part of the content: when and under which person key a record was staged
TRAILER = ("staged_at", "content_hash", "person_key")

CUSTOMER_CONTENT = (
    "address1",
    "birthday",
    "city",
    "country",
    "created_at",
    "deleted",
    "email",
    "email_consent",
    "email_consent_at",
    "external_id",
    "first_name",
    "language",
    "last_name",
    "phone",
    "postal_code",
    "region",
    "sms_consent",
    "sms_consent_at",
    "source",
    "updated_at",
)
ORDER_CONTENT = (
    "categories",
    "counted",
    "currency",
    "customer_external_id",
    "discount_minor",
    "discounted",
    "email",
    "external_id",
    "item_count",
    "net_minor",
    "placed_at",
    "refunded_minor",
    "source",
    "status",
    "total_minor",
    "updated_at",
)
# when an order reached a status (refunded: its latest refund), after ORDER_CONTENT
ORDER_TIMES = ("cancelled_at", "fulfilled_at", "refunded_at")
_NO_TIMES = (None, None, None)
LINE_COLUMNS = (
    "category",
    "discount_minor",
    "line_no",
    "order_external_id",
    "product",
    "quantity",
    "sku",
    "source",
    "unit_price_minor",
)
CART_CONTENT = (
    "checkout_url",
    "converted",
    "created_at",
    "currency",
    "customer_external_id",
    "email",
    "external_id",
    "item_count",
    "items",
    "source",
    "updated_at",
    "value_minor",
)
for _names in (CUSTOMER_CONTENT, ORDER_CONTENT, LINE_COLUMNS, CART_CONTENT):
    assert _names == tuple(sorted(_names)), "content columns must be listed in sorted order"

Line = tuple[Any, ...]

_CUSTOMER_EMAIL = CUSTOMER_CONTENT.index("email")
_CUSTOMER_PHONE = CUSTOMER_CONTENT.index("phone")
_OWNER: dict[tuple[str, ...], tuple[int, int]] = {
    names: (names.index("customer_external_id"), names.index("email"))
    for names in (ORDER_CONTENT, CART_CONTENT)
}


class Built(NamedTuple):
    """One record's content, ready to compare with what is staged and to write (a named
    tuple: built once per record, and cheaper to build than a frozen dataclass)."""

    external_id: str
    updated_at: int | None
    content: tuple[Any, ...]  # in the stream's *_CONTENT order (orders: + ORDER_TIMES)
    content_hash: str
    lines: tuple[Line, ...] = ()  # an order's lines, in LINE_COLUMNS order

    def row(self, staged_at: int, person_key: str | None) -> tuple[Any, ...]:
        """The row to write, in ``content columns + TRAILER`` order."""
        return (*self.content, staged_at, self.content_hash, person_key)


_ONE = Decimal(1)
_MINOR: dict[str, dict[Decimal, int]] = {}  # per currency: amount -> minor units
_REMEMBERED = 100_000  # amounts per currency, so memory stays bounded


def to_minor(amount: Decimal, currency: str) -> int:
    """``amount`` in the currency's minor unit, rounded half to even.

    Prices and totals repeat (catalogue prices, zero discounts), so each amount is
    converted once and remembered: a look-up costs a fraction of the Decimal arithmetic.
    """
    known = _MINOR.get(currency)
    if known is None:
        known = _MINOR[currency] = {}
    minor = known.get(amount)
    if minor is None:
        factor = Decimal(10 ** minor_unit_exponent(currency))
        minor = int((amount * factor).quantize(_ONE, rounding=ROUND_HALF_EVEN))
        if len(known) >= _REMEMBERED:
            known.clear()
        known[amount] = minor
    return minor


def person_key(source: str, customer: Built) -> str:
    """The identity a built customer starts with: e-mail first, then phone, then its id."""
    email = customer.content[_CUSTOMER_EMAIL]
    if email:
        return f"e:{email}"
    phone = customer.content[_CUSTOMER_PHONE]
    if phone:
        return f"p:{phone}"
    return f"s:{source}:{customer.external_id}"


def owner_of(
    stream_content: tuple[str, ...],
) -> Callable[[tuple[Any, ...]], tuple[str | None, str | None]]:
    """Reads (customer id, e-mail) from the content of a built order or cart, which is in
    ``stream_content`` order: what finds its person. Made once per batch: looked up per
    record, the tuple of some twenty names was hashed again each time."""
    return itemgetter(*_OWNER[stream_content])


def _digest(content: dict[str, Any], lines: list[dict[str, Any]]) -> str:
    # every dict is written with its keys in sorted order, which is what OPT_SORT_KEYS
    # gave earlier versions, without sorting them again for each record
    body = orjson.dumps([content, lines])
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def build_customer(source: str, c: Customer) -> Built:
    email, sms = c.email_consent, c.sms_consent
    updated_at = to_ms(c.updated_at)
    content = {
        "address1": c.address1,
        "birthday": c.birthday.isoformat() if c.birthday is not None else None,
        "city": c.city,
        "country": c.country,
        "created_at": to_ms(c.created_at),
        "deleted": c.deleted,
        "email": c.email,
        "email_consent": email.state.value if email else "none",
        "email_consent_at": to_ms(email.at) if email else None,
        "external_id": c.external_id,
        "first_name": c.first_name,
        "language": c.language,
        "last_name": c.last_name,
        "phone": c.phone,
        "postal_code": c.postal_code,
        "region": c.region,
        "sms_consent": sms.state.value if sms else "none",
        "sms_consent_at": to_ms(sms.at) if sms else None,
        "source": source,
        "updated_at": updated_at,
    }
    digest = _digest(content, [])
    return Built(c.external_id, updated_at, tuple(content.values()), digest)


def build_order(source: str, o: Order) -> Built:
    currency, external_id = o.currency, o.external_id
    lines = [
        {
            "category": line.category,
            "discount_minor": to_minor(line.discount, currency),
            "line_no": number,
            "order_external_id": external_id,
            "product": line.product,
            "quantity": line.quantity,
            "sku": line.sku,
            "source": source,
            "unit_price_minor": to_minor(line.unit_price, currency),
        }
        for number, line in enumerate(o.lines, start=1)
    ]
    categories = sorted({line.category for line in o.lines if line.category})
    total = to_minor(o.total, currency)
    refunded = to_minor(o.refunded_total, currency)
    discount = to_minor(o.discount_total, currency)
    status = o.status.value
    updated_at = to_ms(o.updated_at)
    content = {
        "categories": "|".join(categories) if categories else None,
        "counted": status not in NOT_COUNTED,
        "currency": currency,
        "customer_external_id": o.customer_external_id,
        "discount_minor": discount,
        "discounted": discount > 0,
        "email": o.email,
        "external_id": external_id,
        "item_count": sum(line.quantity for line in o.lines),
        "net_minor": total - refunded,
        "placed_at": to_ms(o.placed_at),
        "refunded_minor": refunded,
        "source": source,
        "status": status,
        "total_minor": total,
        "updated_at": updated_at,
    }
    rows = tuple(tuple(line.values()) for line in lines)
    if o.fulfilled_at is None and o.cancelled_at is None and o.refunded_at is None:
        digest = _digest(content, lines)
        return Built(external_id, updated_at, (*content.values(), *_NO_TIMES), digest, rows)
    times = (to_ms(o.cancelled_at), to_ms(o.fulfilled_at), to_ms(o.refunded_at))
    dated = {**content, **{n: t for n, t in zip(ORDER_TIMES, times, strict=True) if t is not None}}
    digest = _digest(dict(sorted(dated.items())), lines)
    return Built(external_id, updated_at, (*content.values(), *times), digest, rows)


def build_cart(source: str, c: Cart) -> Built:
    items = [
        {
            "sku": i.sku,
            "product": i.product,
            "category": i.category,
            "quantity": i.quantity,
            "unit_price": str(i.unit_price),
        }
        for i in c.items
    ]
    updated_at = to_ms(c.updated_at)
    content = {
        "checkout_url": c.checkout_url,
        "converted": c.converted,
        "created_at": to_ms(c.created_at),
        "currency": c.currency,
        "customer_external_id": c.customer_external_id,
        "email": c.email,
        "external_id": c.external_id,
        "item_count": sum(i.quantity for i in c.items),
        "items": orjson.dumps(items).decode(),  # as read, not sorted
        "source": source,
        "updated_at": updated_at,
        "value_minor": to_minor(c.value, c.currency),
    }
    digest = _digest(content, [])
    return Built(c.external_id, updated_at, tuple(content.values()), digest)


BUILDERS: dict[Stream, Callable[[str, Any], Built]] = {
    Stream.CUSTOMERS: build_customer,
    Stream.ORDERS: build_order,
    Stream.CARTS: build_cart,
}


def build(source: str, stream: Stream, records: Iterable[Customer | Order | Cart]) -> list[Built]:
    """The staging rows of one stream's records, in their order."""
    make = BUILDERS[stream]
    return [make(source, record) for record in records]
