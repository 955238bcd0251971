"""The platform export format: how the sample store looks to the files source.

Column and key names are the platform's (``customer_id``, ``total_price``,
``line_items``), not crmsync's, so reading the sample exercises the source's column
mapping. Clean values are spelled in the mixed ways real exports use (phones in several
formats, the odd capitalised e-mail, "Türkiye" for the country), chosen by the style bits
the generator drew for each record; times carry Istanbul's +03:00 offset.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from crmsync.records import Cart, ConsentState, Customer, Order, OrderStatus, Stream
from crmsync.sample.item import Item
from crmsync.sample.spec import ISTANBUL

CUSTOMER_COLUMNS = (
    "customer_id", "email", "first_name", "last_name", "phone", "city", "district", "country",
    "birth_date", "created_at", "updated_at", "accepts_email_marketing",
    "email_marketing_updated_at", "accepts_sms_marketing", "sms_marketing_updated_at", "deleted",
)  # fmt: skip
FILE_NAMES = {
    Stream.CUSTOMERS: "customers.csv",
    Stream.ORDERS: "orders.jsonl",
    Stream.CARTS: "carts.jsonl",
}
_CONSENT = {
    ConsentState.SUBSCRIBED: "subscribed",
    ConsentState.UNSUBSCRIBED: "unsubscribed",
    ConsentState.NONE: "not_subscribed",
}


def stamp(moment: datetime | None) -> str | None:
    return moment.astimezone(ISTANBUL).isoformat() if moment is not None else None


def phone_spelling(e164: str, style: int) -> str:
    national = e164[3:]  # +90 5321234567
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    if style < 80:
        return f"0{a} {b} {c} {d}"
    if style < 140:
        return f"+90 {a} {national[3:]}"
    if style < 190:
        return national
    if style < 220:
        return e164
    if style < 240:
        return f"0 ({a}) {b} {c} {d}"
    return f"0{national}"


def email_spelling(email: str, style: int) -> str:
    if style < 236:
        return email
    if style < 248:
        return email[:1].upper() + email[1:]
    return f" {email} "


def customer_row(customer: Customer, style: int) -> dict[str, str]:
    email_consent, sms_consent = customer.email_consent, customer.sms_consent
    country_style = style >> 16 & 0xFF
    country = customer.country or ""
    if country == "TR" and country_style >= 230:
        country = "Türkiye" if country_style < 250 else "Turkey"
    return {
        "customer_id": customer.external_id,
        "email": email_spelling(customer.email, style >> 8 & 0xFF) if customer.email else "",
        "first_name": customer.first_name or "",
        "last_name": customer.last_name or "",
        "phone": phone_spelling(customer.phone, style & 0xFF) if customer.phone else "",
        "city": customer.city or "",
        "district": customer.region or "",
        "country": country,
        "birth_date": customer.birthday.isoformat() if customer.birthday else "",
        "created_at": stamp(customer.created_at) or "",
        "updated_at": stamp(customer.updated_at) or "",
        "accepts_email_marketing": _CONSENT[email_consent.state] if email_consent else "",
        "email_marketing_updated_at": (stamp(email_consent.at) if email_consent else None) or "",
        "accepts_sms_marketing": _CONSENT[sms_consent.state] if sms_consent else "",
        "sms_marketing_updated_at": (stamp(sms_consent.at) if sms_consent else None) or "",
        "deleted": "true" if customer.deleted else "false",
    }


def status_spelling(status: OrderStatus, style: int) -> str:
    if status is OrderStatus.FULFILLED:
        return "fulfilled" if style < 180 else "delivered" if style < 230 else "shipped"
    if status is OrderStatus.PAID:
        return "paid" if style < 200 else "processing"
    return status.value


def order_dict(order: Order, style: int) -> dict[str, Any]:
    return {
        "id": order.external_id,
        "customer_id": order.customer_external_id,
        "email": order.email,
        "created_at": stamp(order.placed_at),
        "updated_at": stamp(order.updated_at),
        "status": status_spelling(order.status, style),
        "currency": order.currency,
        "total_price": str(order.total),
        "total_discount": str(order.discount_total),
        "total_refunded": str(order.refunded_total),
        "line_items": [
            {
                "sku": line.sku,
                "title": line.product,
                "category": line.category,
                "quantity": line.quantity,
                "price": str(line.unit_price),
                "discount": str(line.discount),
            }
            for line in order.lines
        ],
    }


def cart_dict(cart: Cart) -> dict[str, Any]:
    return {
        "id": cart.external_id,
        "customer_id": cart.customer_external_id,
        "email": cart.email,
        "created_at": stamp(cart.created_at),
        "updated_at": stamp(cart.updated_at),
        "completed_at": stamp(cart.updated_at) if cart.converted else None,
        "currency": cart.currency,
        "total_price": str(cart.value),
        "abandoned_checkout_url": cart.checkout_url,
        "line_items": [
            {
                "sku": item.sku,
                "title": item.product,
                "category": item.category,
                "quantity": item.quantity,
                "price": str(item.unit_price),
            }
            for item in cart.items
        ],
    }


def render(item: Item) -> dict[str, Any]:
    """The export row of one generated item: its dirty raw row, or its record spelled out."""
    if item.raw is not None:
        return item.raw
    record = item.record
    if isinstance(record, Customer):
        return customer_row(record, item.style)
    if isinstance(record, Order):
        return order_dict(record, item.style)
    if isinstance(record, Cart):
        return cart_dict(record)
    raise ValueError(f"an item without a record needs a raw row: {item!r}")


class ExportWriter:
    """Writes export rows to the three files as they come, holding none of them."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {stream: out_dir / name for stream, name in FILE_NAMES.items()}
        self._customers = self.paths[Stream.CUSTOMERS].open("w", encoding="utf-8", newline="")
        self._orders = self.paths[Stream.ORDERS].open("wb")
        self._carts = self.paths[Stream.CARTS].open("wb")
        self._csv = csv.writer(self._customers, lineterminator="\n")
        self._csv.writerow(CUSTOMER_COLUMNS)

    def write(self, item: Item) -> None:
        row = render(item)
        if item.stream is Stream.CUSTOMERS:
            self._csv.writerow([row.get(column, "") for column in CUSTOMER_COLUMNS])
        else:
            handle = self._orders if item.stream is Stream.ORDERS else self._carts
            handle.write(orjson.dumps(row) + b"\n")

    def close(self) -> None:
        for handle in (self._customers, self._orders, self._carts):
            handle.close()
