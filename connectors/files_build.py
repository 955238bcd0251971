"""Canonical records from raw export rows, through the column mapping and ``normalize``.

Pure functions: a row (seen through a ``View``) in, a record out, or a ``RecordError``
naming the file's own column, because that is what the operator has to go and fix.
Repairs (a huge name cut to size) are reported through ``notes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any

from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.records import Cart, CartItem, Consent, Customer, Order, OrderLine

ZERO = Decimal(0)
_MISSING = object()


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """A value by dotted path ("customer.id", "items.0.sku"); an exact key wins over a path."""
    found = values.get(path, _MISSING)
    if found is not _MISSING:
        return found
    current: Any = values
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


@dataclass(frozen=True, slots=True)
class View:
    """One row (or one JSON line object) seen through a canonical -> column mapping."""

    values: Mapping[str, Any]
    mapping: Mapping[str, str]
    dotted: bool  # JSON: columns are dotted paths
    prefix: str = ""  # for messages, e.g. "line_items[2]."

    def get(self, name: str) -> Any:
        column = self.mapping.get(name)
        if column is None:
            return None
        return lookup(self.values, column) if self.dotted else self.values.get(column)

    def field(self, name: str) -> str:
        return self.prefix + self.mapping.get(name, name)


@dataclass(frozen=True, slots=True)
class Parsing:
    """How this source's values are spelled: its time zone and date formats, its phone region."""

    tz: tzinfo
    date_format: str | None = None
    birthday_format: str | None = None
    region: str = "TR"

    def time(self, view: View, name: str) -> datetime | None:
        raw = view.get(name)
        if raw is None or raw == "":
            return None
        return normalize.timestamp(raw, view.field(name), tz=self.tz, fmt=self.date_format)


@lru_cache(maxsize=4096)
def _email(value: str, field: str) -> str | None:
    """Orders repeat their customer's address; validating it once per run saves most of the cost."""
    return normalize.email(value, field)


def email(view: View, name: str = "email") -> str | None:
    raw = view.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        return _email(raw, view.field(name))
    return normalize.email(raw, view.field(name))


def text(
    view: View, name: str, notes: normalize.Notes, limit: int = normalize.MAX_TEXT
) -> str | None:
    raw = view.get(name)
    if raw is None or raw == "":  # the common empty cell, without the cost of normalising it
        return None
    return normalize.text(raw, view.field(name), notes=notes, limit=limit)


def optional_id(view: View, name: str) -> str | None:
    raw = view.get(name)
    if raw is None or raw == "":
        return None
    return normalize.text(raw, view.field(name), limit=128)


def phone(view: View, parsing: Parsing) -> str | None:
    raw = view.get("phone")
    if raw is None or raw == "":
        return None
    return normalize.phone(raw, view.field("phone"), region=parsing.region)


def country(view: View) -> str | None:
    raw = view.get("country")
    if raw is None or raw == "":
        return None
    return normalize.country(raw, view.field("country"))


def birthday(view: View, parsing: Parsing) -> date | None:
    raw = view.get("birthday")
    if raw is None or raw == "":
        return None
    return normalize.birthday(raw, view.field("birthday"), fmt=parsing.birthday_format)


def deleted(view: View) -> bool:
    raw = view.get("deleted")
    if raw is None or raw == "":
        return False
    return normalize.boolean(raw, view.field("deleted"))


def optional_money(view: View, name: str) -> Decimal:
    raw = view.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return ZERO
    return normalize.money(raw, view.field(name))


def required_time(view: View, name: str, parsing: Parsing) -> datetime:
    found = parsing.time(view, name)
    if found is None:
        raise RecordError("missing date/time; this field is required", field=view.field(name))
    return found


def consent(view: View, state: str, at: str, parsing: Parsing) -> Consent | None:
    if state not in view.mapping:
        return None
    return Consent(
        normalize.consent_state(view.get(state), view.field(state)), parsing.time(view, at)
    )


def flag_or_time(view: View, name: str, parsing: Parsing) -> bool:
    """True/false, or a completion time where a time means true (``completed_at``)."""
    raw = view.get(name)
    try:
        return normalize.boolean(raw, view.field(name))
    except RecordError:
        pass
    try:
        return parsing.time(view, name) is not None
    except RecordError as exc:
        raise RecordError(
            f"expected true/false or a date/time, got {raw!r}", field=view.field(name)
        ) from exc


def customer(view: View, parsing: Parsing, notes: normalize.Notes) -> Customer:
    return Customer(
        external_id=normalize.required_id(view.get("external_id"), view.field("external_id")),
        email=email(view),
        phone=phone(view, parsing),
        first_name=text(view, "first_name", notes),
        last_name=text(view, "last_name", notes),
        city=text(view, "city", notes),
        region=text(view, "region", notes),
        country=country(view),
        postal_code=text(view, "postal_code", notes, limit=32),
        address1=text(view, "address1", notes),
        language=text(view, "language", notes, limit=35),
        birthday=birthday(view, parsing),
        created_at=parsing.time(view, "created_at"),
        updated_at=parsing.time(view, "updated_at"),
        email_consent=consent(view, "email_consent", "email_consent_at", parsing),
        sms_consent=consent(view, "sms_consent", "sms_consent_at", parsing),
        deleted=deleted(view),
    )


def order_line(view: View, notes: normalize.Notes) -> OrderLine:
    return OrderLine(
        sku=text(view, "sku", notes, limit=128),
        product=text(view, "product", notes),
        category=text(view, "category", notes),
        quantity=normalize.quantity(view.get("quantity"), view.field("quantity")),
        unit_price=normalize.money(view.get("unit_price"), view.field("unit_price")),
        discount=optional_money(view, "discount"),
    )


def cart_item(view: View, notes: normalize.Notes) -> CartItem:
    return CartItem(
        sku=text(view, "sku", notes, limit=128),
        product=text(view, "product", notes),
        category=text(view, "category", notes),
        quantity=normalize.quantity(view.get("quantity"), view.field("quantity")),
        unit_price=normalize.money(view.get("unit_price"), view.field("unit_price")),
    )


def order(
    head: View, lines: Sequence[OrderLine], parsing: Parsing, notes: normalize.Notes
) -> Order:
    return Order(
        external_id=normalize.required_id(head.get("external_id"), head.field("external_id")),
        customer_external_id=optional_id(head, "customer_external_id"),
        email=email(head),
        placed_at=required_time(head, "placed_at", parsing),
        status=normalize.order_status(head.get("status"), head.field("status")),
        currency=normalize.currency(head.get("currency"), head.field("currency")),
        total=normalize.money(head.get("total"), head.field("total")),
        discount_total=optional_money(head, "discount_total"),
        refunded_total=optional_money(head, "refunded_total"),
        updated_at=parsing.time(head, "updated_at"),
        lines=tuple(lines),
    )


def cart(head: View, items: Sequence[CartItem], parsing: Parsing, notes: normalize.Notes) -> Cart:
    return Cart(
        external_id=normalize.required_id(head.get("external_id"), head.field("external_id")),
        customer_external_id=optional_id(head, "customer_external_id"),
        email=email(head),
        currency=normalize.currency(head.get("currency"), head.field("currency")),
        value=normalize.money(head.get("value"), head.field("value")),
        created_at=parsing.time(head, "created_at"),
        updated_at=parsing.time(head, "updated_at"),
        checkout_url=text(head, "checkout_url", notes, limit=2048),
        converted=flag_or_time(head, "converted", parsing),
        items=tuple(items),
    )
