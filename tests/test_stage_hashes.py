"""Staged rows and content hashes stay what earlier versions wrote.

Staging builds each row as a tuple for the driver. Earlier versions built a dict per row
and hashed it with ``orjson`` (sorted keys) and BLAKE2b; the hashes already stored must
compare equal to the new ones, or the first run after an upgrade would re-stage every
record. The ``reference_*`` functions below restate how those versions built rows and
hashes; every staged value and hash must equal theirs, on both engines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from crmsync.normalize import minor_unit_exponent
from crmsync.records import (
    Cart,
    CartItem,
    Consent,
    ConsentState,
    Customer,
    Order,
    OrderLine,
    OrderStatus,
    Stream,
)
from crmsync.sample import SampleSpec, iter_store
from state import schema
from state.stage_rows import build_order, to_minor
from state.store import Store
from tests.builders import NOW, customer, days_ago, order

Row = dict[str, Any]


def reference_minor(amount: Decimal, currency: str) -> int:
    exponent = minor_unit_exponent(currency)
    return int((amount * (10**exponent)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def reference_ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def reference_customer(source: str, c: Customer) -> Row:
    email, sms = c.email_consent, c.sms_consent
    return {
        "source": source,
        "external_id": c.external_id,
        "email": c.email,
        "phone": c.phone,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "city": c.city,
        "region": c.region,
        "country": c.country,
        "postal_code": c.postal_code,
        "address1": c.address1,
        "language": c.language,
        "birthday": c.birthday,
        "created_at": reference_ms(c.created_at),
        "updated_at": reference_ms(c.updated_at),
        "email_consent": email.state.value if email else "none",
        "email_consent_at": reference_ms(email.at) if email else None,
        "sms_consent": sms.state.value if sms else "none",
        "sms_consent_at": reference_ms(sms.at) if sms else None,
        "deleted": c.deleted,
    }


def reference_lines(source: str, o: Order) -> list[Row]:
    return [
        {
            "source": source,
            "order_external_id": o.external_id,
            "line_no": number,
            "sku": line.sku,
            "product": line.product,
            "category": line.category,
            "quantity": line.quantity,
            "unit_price_minor": reference_minor(line.unit_price, o.currency),
            "discount_minor": reference_minor(line.discount, o.currency),
        }
        for number, line in enumerate(o.lines, start=1)
    ]


def reference_order(source: str, o: Order) -> Row:
    categories = sorted({line.category for line in o.lines if line.category})
    total = reference_minor(o.total, o.currency)
    refunded = reference_minor(o.refunded_total, o.currency)
    discount = reference_minor(o.discount_total, o.currency)
    return {
        "source": source,
        "external_id": o.external_id,
        "customer_external_id": o.customer_external_id,
        "email": o.email,
        "placed_at": reference_ms(o.placed_at),
        "updated_at": reference_ms(o.updated_at),
        "status": o.status.value,
        "currency": o.currency,
        "total_minor": total,
        "discount_minor": discount,
        "refunded_minor": refunded,
        "item_count": sum(line.quantity for line in o.lines),
        "categories": "|".join(categories) if categories else None,
        "counted": o.status.value not in ("cancelled", "refunded"),
        "net_minor": total - refunded,
        "discounted": discount > 0,
    }


def reference_cart(source: str, c: Cart) -> Row:
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
    return {
        "source": source,
        "external_id": c.external_id,
        "customer_external_id": c.customer_external_id,
        "email": c.email,
        "currency": c.currency,
        "value_minor": reference_minor(c.value, c.currency),
        "item_count": sum(i.quantity for i in c.items),
        "checkout_url": c.checkout_url,
        "converted": c.converted,
        "created_at": reference_ms(c.created_at),
        "updated_at": reference_ms(c.updated_at),
        "items": orjson.dumps(items).decode(),
    }


def reference_hash(row: Row, lines: Sequence[Row] = ()) -> str:
    """The digest earlier versions stored: the row's content (with its staging time and
    person key, which they had in the dict too, left out) and its lines, keys sorted."""
    body = orjson.dumps([row, list(lines)], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def edge_customers() -> list[Customer]:
    return [
        customer("e1", "ayşe@örnek.com.tr", birthday=date(1990, 2, 28), phone="+905321112233"),
        customer("e2", None, phone="+905321112234", email_consent=None, updated_at=None),
        Customer(external_id="e3"),  # nothing but an id
        customer(
            "e4",
            "eski@example.com",
            birthday=date(999, 1, 1),  # four digits, as SQLite stores it
            deleted=True,
            sms_consent=Consent(ConsentState.UNSUBSCRIBED, days_ago(3)),
            email_consent=Consent(ConsentState.SUBSCRIBED, None),
            address1='Çarşı Cad. "No:5"\ttab\nnewline \\ backslash',
            language="tr",
            postal_code="34000",
        ),
    ]


def edge_orders() -> list[Order]:
    lines = (
        OrderLine("S1", "Ürün", "Kitap", 2, Decimal("10.005"), Decimal("0.015")),
        OrderLine(None, None, None, 1, Decimal("0")),
        OrderLine("S3", "Çay", "Gıda", 3, Decimal("7.125"), Decimal("1")),
    )
    at = NOW - timedelta(days=2)
    return [
        order("o1", "e1", "300", 3, discount="12.5", refunded="0.005"),
        order("o2", None, "99.99", 1, email="misafir@example.com", status=OrderStatus.CANCELLED),
        order("o3", "e2", "1000.5", 4, currency="JPY", status=OrderStatus.REFUNDED),
        order("o4", "e3", "1.2345", 5, currency="KWD", categories=("A", "B", "A")),
        Order("o5", "e4", None, at, OrderStatus.PAID, "TRY", Decimal("51.26"), lines=lines),
        Order("o6", None, None, at, OrderStatus.PENDING, "EUR", Decimal(0), updated_at=None),
    ]


def edge_carts() -> list[Cart]:
    items = (
        CartItem("S1", "Kulaklık", "Elektronik", 1, Decimal("249.90")),
        CartItem(None, None, None, 2, Decimal("0.5")),
    )
    return [
        Cart("k1", "e1", None, "TRY", Decimal("250.40"), days_ago(1), days_ago(1), None, False),
        Cart("k2", None, "x@example.com", "TRY", Decimal("1.005"), None, None, "u", True, items),
        Cart("k3", "e2", None, "JPY", Decimal("12.5"), NOW, NOW, "https://x/ç", False, items),
    ]


def sample_records() -> dict[Stream, list[Any]]:
    found: dict[Stream, list[Any]] = {Stream.CUSTOMERS: [], Stream.ORDERS: [], Stream.CARTS: []}
    kinds = {Customer: Stream.CUSTOMERS, Order: Stream.ORDERS, Cart: Stream.CARTS}
    for record in iter_store(SampleSpec(customers=150, seed=3)):
        found[kinds[type(record)]].append(record)
    found[Stream.CUSTOMERS] += edge_customers()
    found[Stream.ORDERS] += edge_orders()
    found[Stream.CARTS] += edge_carts()
    return found


def _staged(store: Store, table: sa.Table) -> dict[str, Row]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table)).mappings().all()
    return {row["external_id"]: dict(row) for row in rows}


STATUS_TIMES = ("fulfilled_at", "cancelled_at", "refunded_at")  # migration 0010


def _content(row: Row) -> Row:
    """The row's content as earlier versions hashed it: an order's status times, which
    came later, count only when the source gave them (``state.stage_rows``)."""
    return {
        k: v
        for k, v in row.items()
        if k not in {"staged_at", "content_hash", "person_key"}
        and not (k in STATUS_TIMES and v is None)
    }


def test_staged_rows_and_hashes_equal_those_of_earlier_versions(state_url: str) -> None:
    store = Store(state_url)
    records = sample_records()
    for stream, batch in records.items():
        stats = store.stage("shop", stream, batch)
        assert stats.staged == len(batch)
    references: dict[Stream, tuple[sa.Table, Callable[[str, Any], Row]]] = {
        Stream.CUSTOMERS: (schema.customers, reference_customer),
        Stream.ORDERS: (schema.orders, reference_order),
        Stream.CARTS: (schema.carts, reference_cart),
    }
    lines = {o.external_id: reference_lines("shop", o) for o in records[Stream.ORDERS]}
    for stream, (table, reference_row) in references.items():
        expected = {r.external_id: reference_row("shop", r) for r in records[stream]}
        staged = _staged(store, table)
        assert staged.keys() == expected.keys()
        for external_id, row in staged.items():
            reference = expected[external_id]
            assert _content(row) == reference, (stream, external_id)
            assert row["content_hash"] == reference_hash(reference, lines.get(external_id, ()))
    with store.engine.connect() as conn:
        line_rows = conn.execute(sa.select(schema.order_lines)).mappings().all()
    assert sorted(
        (dict(r) for r in line_rows), key=lambda r: (r["order_external_id"], r["line_no"])
    ) == sorted(
        (line for found in lines.values() for line in found),
        key=lambda r: (r["order_external_id"], r["line_no"]),
    )
    # and so a re-read of the same records, as a lookback window finds them, writes nothing
    for stream, batch in records.items():
        assert store.stage("shop", stream, batch).unchanged == len(batch)
    store.close()


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.005", "TRY", 1000),  # half to even
        ("10.015", "TRY", 1002),
        ("-0.005", "TRY", 0),
        ("1000.5", "JPY", 1000),
        ("1001.5", "JPY", 1002),
        ("1.2345", "KWD", 1234),
        ("1.2355", "KWD", 1236),
    ],
)
def test_minor_units_round_half_to_even_and_are_remembered_per_currency(
    amount: str, currency: str, minor: int
) -> None:
    assert to_minor(Decimal(amount), currency) == minor
    assert to_minor(Decimal(amount), currency) == minor  # the remembered value
    assert to_minor(Decimal(amount), currency) == reference_minor(Decimal(amount), currency)


def test_one_amount_is_converted_per_currency_not_once_for_all() -> None:
    """10.5 is 1050 kuruş but 10 yen (JPY has no minor unit; half to even)."""
    assert to_minor(Decimal("10.5"), "TRY") == 1050
    assert to_minor(Decimal("10.5"), "JPY") == 10
    line = OrderLine("S", "P", "C", 1, Decimal("10.5"))
    placed = datetime(2026, 1, 1, tzinfo=UTC)
    in_yen = Order("o", None, None, placed, OrderStatus.PAID, "JPY", Decimal("10.5"), lines=(line,))
    built = build_order("shop", in_yen)
    assert built.lines[0][-1] == 10  # unit_price_minor
