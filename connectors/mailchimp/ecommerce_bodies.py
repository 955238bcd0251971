"""Events as Mailchimp e-commerce objects: pure transforms, no I/O.

Every id is derived from the event's record, so a resent event is the same upsert of the
same objects: the store from the source's name, the order and the cart from the source's
own ids, the customer from the e-mail address (Mailchimp's subscriber hash, so one person
is one customer of the store whichever source order brought them), a product from the
line's product id and its variant from the line's SKU (else the product id: a product
without variants is its own single variant).

A customer is always sent with ``opt_in_status: false``. Mailchimp adds an e-commerce
customer who is not yet on the audience as a *transactional* member and never changes
an existing member's status from this flag: an order or a cart must never subscribe
anybody (consent comes from the people push alone).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from crmsync.events import Event, EventKind, EventLine

MAX_STORE_ID = 50  # kept short: it appears in every path
_SLUG = re.compile(r"[^a-z0-9_-]+")
# what Mailchimp's order notifications react to (financial_status / fulfillment_status)
SHIPPED = "shipped"
CANCELLED = "cancelled"
REFUNDED = "refunded"
PARTLY_REFUNDED = "partially_refunded"
PAID = "paid"
# an order's totals beside order_total: (Mailchimp's name, the event property it comes from)
_TOTALS = (
    ("discount_total", "discount"),
    ("tax_total", "tax_total"),
    ("shipping_total", "shipping_total"),
)


def store_id(prefix: str, source: str) -> str:
    """The store's id for a source: readable, stable, and distinct per source name (a
    name the slug had to change gets a short hash of itself, so 'EU shop' and 'eu-shop'
    stay two stores)."""
    slug = _SLUG.sub("-", source.lower()).strip("-") or "source"
    found = f"{prefix}{slug}"
    if slug != source or len(found) > MAX_STORE_ID:
        digest = hashlib.sha256(source.encode()).hexdigest()[:8]
        found = f"{found[: MAX_STORE_ID - 9]}-{digest}"
    return found


def store_body(
    store: str, list_id: str, currency: str, name: str, *, syncing: bool
) -> dict[str, Any]:
    return {
        "id": store,
        "list_id": list_id,
        "name": name,
        "currency_code": currency.upper(),
        "platform": "crmsync",
        "is_syncing": syncing,
    }


def customer_id(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def customer(email: str) -> dict[str, Any]:
    return {"id": customer_id(email), "email_address": email.strip(), "opt_in_status": False}


def variant_id(line: EventLine) -> str:
    return line.sku or line.product_id


def variant_body(line: EventLine) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": variant_id(line),
        "title": line.name,
        "price": money(line.unit_price),
    }
    if line.sku:
        body["sku"] = line.sku
    if line.url:
        body["url"] = line.url
    if line.image_url:
        body["image_url"] = line.image_url
    return body


def product_body(line: EventLine) -> dict[str, Any]:
    """A product that Mailchimp does not have yet, with this line's variant in it."""
    body: dict[str, Any] = {
        "id": line.product_id,
        "title": line.name,
        "variants": [variant_body(line)],
    }
    if line.url:
        body["url"] = line.url
    if line.image_url:
        body["image_url"] = line.image_url
    if line.categories:
        body["type"] = line.categories[0]
    return body


def order_body(event: Event) -> dict[str, Any]:
    """A placed order with its lines and its customer (whom it upserts)."""
    assert event.email is not None  # screened by the caller
    total = event.value if event.value is not None else lines_total(event.lines)
    body: dict[str, Any] = {
        "id": event.record_id,
        "customer": customer(event.email),
        "currency_code": event.currency.upper(),
        "order_total": money(total),
        "processed_at_foreign": instant(event.occurred_at),
        "financial_status": _financial_status(event, total),
        "lines": [_order_line(number, line) for number, line in enumerate(event.lines, 1)],
    }
    fulfillment = _text(event.properties, "fulfillment_status")
    if fulfillment is None and _text(event.properties, "status") == "fulfilled":
        fulfillment = SHIPPED
    if fulfillment:
        body["fulfillment_status"] = fulfillment
    for name, given_as in _TOTALS:
        amount = _amount(event.properties, given_as)
        if amount is not None:
            body[name] = money(amount)
    url = _text(event.properties, "order_url")
    if url:
        body["order_url"] = url
    return body


def _financial_status(event: Event, total: Decimal) -> str:
    """The order's financial status as the source holds it now, not as it was placed: the
    batch in flight at a crash is sent again, and a placed order sent again must not turn
    a cancelled or refunded order back to paid (its status event would then change it a
    second time, and Mailchimp's notifications react to each change)."""
    given = _text(event.properties, "financial_status")
    if given:
        return given
    if _text(event.properties, "status") == "cancelled":
        return CANCELLED
    refunded = _amount(event.properties, "refunded")
    if refunded is not None and refunded > 0:
        return PARTLY_REFUNDED if refunded < total else REFUNDED
    return PAID


def status_body(event: Event) -> dict[str, Any]:
    """What a later event changes on its order: the statuses Mailchimp's order
    notifications react to. Mailchimp keeps no refunded amount on an order: a refund is
    its ``financial_status``, ``partially_refunded`` when the amount refunded is known to
    be less than the order's total (``order_total`` in the event's properties)."""
    stamp = instant(event.occurred_at)
    if event.kind is EventKind.FULFILLED_ORDER:
        return {"fulfillment_status": SHIPPED, "updated_at_foreign": stamp}
    if event.kind is EventKind.CANCELLED_ORDER:
        return {
            "financial_status": CANCELLED,
            "cancelled_at_foreign": stamp,
            "updated_at_foreign": stamp,
        }
    if event.kind is EventKind.REFUNDED_ORDER:
        order_total = _amount(event.properties, "order_total")
        partial = event.value is not None and order_total is not None and event.value < order_total
        return {
            "financial_status": PARTLY_REFUNDED if partial else REFUNDED,
            "updated_at_foreign": stamp,
        }
    raise ValueError(f"{event.kind} does not change an order's status")


def cart_body(event: Event) -> dict[str, Any]:
    """An open cart with its lines and the link that finishes it (what Mailchimp's
    abandoned-cart automation needs)."""
    assert event.email is not None  # screened by the caller
    total = event.value if event.value is not None else lines_total(event.lines)
    body: dict[str, Any] = {
        "id": event.record_id,
        "customer": customer(event.email),
        "currency_code": event.currency.upper(),
        "order_total": money(total),
        "lines": [
            {
                "id": str(number),
                "product_id": line.product_id,
                "product_variant_id": variant_id(line),
                "quantity": line.quantity,
                "price": money(line.unit_price * line.quantity),
            }
            for number, line in enumerate(event.lines, 1)
        ],
    }
    if event.checkout_url:
        body["checkout_url"] = event.checkout_url
    return body


def cart_header(body: Mapping[str, Any]) -> dict[str, Any]:
    """A cart's body without what a PATCH does not take or need (id, lines, customer)."""
    return {k: v for k, v in body.items() if k not in ("id", "lines", "customer")}


def same_lines(found: Any, wanted: list[dict[str, Any]]) -> bool:
    """Whether a cart Mailchimp holds has these lines (product, variant, quantity, price)."""
    if not isinstance(found, list):
        return False

    def shape(lines: list[Any]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                str(line.get("product_id")),
                str(line.get("product_variant_id")),
                line.get("quantity"),
                round(float(line.get("price") or 0), 2),
            )
            for line in lines
            if isinstance(line, Mapping)
        )

    return shape(found) == shape(wanted)


def _order_line(number: int, line: EventLine) -> dict[str, Any]:
    """A line's ``price`` is the line's amount before its discount (unit price times
    quantity), its ``discount`` the line's total discount."""
    body: dict[str, Any] = {
        "id": str(number),
        "product_id": line.product_id,
        "product_variant_id": variant_id(line),
        "quantity": line.quantity,
        "price": money(line.unit_price * line.quantity),
    }
    if line.discount:
        body["discount"] = money(line.discount)
    return body


def lines_total(lines: tuple[EventLine, ...]) -> Decimal:
    return sum((line.unit_price * line.quantity - line.discount for line in lines), Decimal(0))


def money(amount: Decimal) -> float:
    """Mailchimp's amounts are JSON numbers; cents survive the float."""
    return float(amount.quantize(Decimal("0.01")))


def instant(moment: datetime) -> str:
    """ISO 8601 in UTC, the platform's instant (a naive time is taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat()


def _text(properties: Mapping[str, Any], name: str) -> str | None:
    value = properties.get(name)
    return value if isinstance(value, str) and value else None


def _amount(properties: Mapping[str, Any], name: str) -> Decimal | None:
    value = properties.get(name)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
