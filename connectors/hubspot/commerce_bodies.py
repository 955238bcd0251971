"""What each event becomes in HubSpot's commerce objects: pure transforms, no I/O.

The property names are HubSpot's default ones for orders, carts and line items (the
orders and carts guides on developers.hubspot.com); the association type ids are the
HUBSPOT_DEFINED ones those guides list. Values go as strings, as for contacts; times as
ISO 8601 in UTC, the platform's true instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.hubspot.objects import ObjectKind
from crmsync.events import Event, EventKind, EventLine

ORDERS = "orders"
CARTS = "carts"
LINE_ITEMS = "line_items"
ORDER_TO_CONTACT = 507
ORDER_TO_LINE_ITEM = 513
CART_TO_CONTACT = 586
CART_TO_LINE_ITEM = 590
ORDER_ID = "hs_external_order_id"  # the source's order id: found again by a search on it
CART_ID = "hs_external_cart_id"
STORE = "hs_source_store"  # the source's name: two sources' order 1001 stay apart
ORDER_OBJECTS = ObjectKind(ORDERS, "order", ORDER_ID, STORE, ORDER_TO_CONTACT, ORDER_TO_LINE_ITEM)
CART_OBJECTS = ObjectKind(CARTS, "cart", CART_ID, STORE, CART_TO_CONTACT, CART_TO_LINE_ITEM)

# the kinds HubSpot takes, and what each one writes there
EVENT_NAMES: Mapping[EventKind, str] = {
    EventKind.PLACED_ORDER: "order",
    EventKind.FULFILLED_ORDER: "order.hs_fulfillment_status",
    EventKind.CANCELLED_ORDER: "order.hs_external_order_status",
    EventKind.REFUNDED_ORDER: "order.hs_payment_status",
    EventKind.STARTED_CHECKOUT: "cart",
    EventKind.CHECKOUT_CLOSED: "cart (archived)",
}
SCOPES = "crm.objects.orders.write, crm.objects.carts.write, crm.objects.line_items.write"


def number(amount: Decimal) -> str:
    """A HubSpot number property's value: plain digits, no exponent."""
    text = format(amount, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def stamp(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{aware.microsecond // 1000:03d}Z"
    )


def line_item(line: EventLine, currency: str) -> dict[str, str]:
    """One line as a line item's properties (HubSpot computes its amount)."""
    found = {
        "name": line.name[:500] or line.product_id,
        "quantity": str(line.quantity),
        "price": number(line.unit_price),
    }
    if currency:
        found["hs_line_item_currency_code"] = currency
    if line.sku:
        found["hs_sku"] = line.sku
    return found


def order_properties(event: Event) -> dict[str, str]:
    """A placed order's properties; its date is the order's, so a workflow can filter out
    the old orders a backfill brings (HubSpot has no flag that keeps workflows off)."""
    found = {
        "hs_order_name": f"Order {event.record_id}",
        ORDER_ID: event.record_id,
        STORE: event.source,
        "hs_external_created_date": stamp(event.occurred_at),
    }
    if event.currency:
        found["hs_currency_code"] = event.currency
    if event.value is not None:
        found["hs_total_price"] = number(event.value)
    status = event.properties.get("status")
    if isinstance(status, str) and status:
        found["hs_external_order_status"] = status
    return found


def status_properties(event: Event) -> dict[str, str]:
    """What a fulfilment, cancellation or refund changes on its order."""
    if event.kind is EventKind.FULFILLED_ORDER:
        return {"hs_fulfillment_status": "fulfilled"}
    if event.kind is EventKind.CANCELLED_ORDER:
        return {"hs_external_order_status": "cancelled"}
    return {"hs_payment_status": "refunded"}


def cart_properties(event: Event) -> dict[str, str]:
    found = {
        "hs_cart_name": f"Cart {event.record_id}",
        CART_ID: event.record_id,
        STORE: event.source,
    }
    if event.checkout_url:
        found["hs_cart_url"] = event.checkout_url
    if event.currency:
        found["hs_currency_code"] = event.currency
    if event.value is not None:
        found["hs_total_price"] = number(event.value)
    return found


def association(to_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": to_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }
