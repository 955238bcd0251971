"""Small builders of canonical records for tests (clean values, sensible defaults)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from crmsync.events import Event, EventKind, EventLine
from crmsync.records import (
    Cart,
    CartItem,
    Consent,
    ConsentState,
    Customer,
    Order,
    OrderLine,
    OrderStatus,
)

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def customer(cid: str, email: str | None = None, **kw: object) -> Customer:
    values: dict[str, object] = {
        "first_name": "Ayşe",
        "last_name": "Yılmaz",
        "city": "İstanbul",
        "country": "TR",
        "created_at": days_ago(400),
        "updated_at": days_ago(10),
        "email_consent": Consent(ConsentState.SUBSCRIBED, days_ago(300)),
    }
    values.update(kw)
    return Customer(external_id=cid, email=email, **values)  # type: ignore[arg-type]


def order(
    oid: str,
    cid: str | None,
    total: str,
    placed_days_ago: float,
    *,
    status: OrderStatus = OrderStatus.PAID,
    discount: str = "0",
    refunded: str = "0",
    categories: tuple[str, ...] = ("Kitap",),
    currency: str = "TRY",
    email: str | None = None,
    updated_at: datetime | None = None,
) -> Order:
    lines = tuple(
        OrderLine(
            sku=f"SKU-{i}",
            product=f"Ürün {i}",
            category=c,
            quantity=1,
            unit_price=Decimal(total) / len(categories),
        )
        for i, c in enumerate(categories)
    )
    placed = days_ago(placed_days_ago)
    return Order(
        external_id=oid,
        customer_external_id=cid,
        email=email,
        placed_at=placed,
        status=status,
        currency=currency,
        total=Decimal(total),
        discount_total=Decimal(discount),
        refunded_total=Decimal(refunded),
        updated_at=updated_at or placed,
        lines=lines,
    )


def cart(kid: str, cid: str, value: str, hours_ago: float, *, converted: bool = False) -> Cart:
    at = NOW - timedelta(hours=hours_ago)
    return Cart(
        external_id=kid,
        customer_external_id=cid,
        email=None,
        currency="TRY",
        value=Decimal(value),
        created_at=at,
        updated_at=at,
        checkout_url=f"https://shop.example.com/checkout/{kid}",
        converted=converted,
        items=(CartItem("SKU-1", "Kulaklık", "Elektronik", 1, Decimal(value)),),
    )


def an_event(
    kind: EventKind,
    record: str = "1001",
    *,
    source: str,
    at: datetime,
    currency: str,
    email: str | None = "ayse@example.com",
    lines: tuple[EventLine, ...] = (),
    value: str | None = "72.50",
    **extra: Any,
) -> Event:
    """An order's or cart's event as the engine derives it, keyed as it keys them."""
    return Event(
        key=f"{kind}:{source}:{record}",
        kind=kind,
        person_key=f"e:{email}",
        occurred_at=at,
        source=source,
        record_id=record,
        currency=currency,
        value=Decimal(value) if value is not None else None,
        lines=lines,
        email=email,
        **extra,
    )
