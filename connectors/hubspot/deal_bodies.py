"""What each event becomes as a HubSpot deal: pure transforms, no I/O.

HubSpot's own deal properties (the deals guide on developers.hubspot.com): ``dealname``,
``pipeline`` and ``dealstage`` (internal ids), ``amount`` (in the deal's currency),
``closedate``, ``deal_currency_code``. Deals have no default property for an external
id, so crmsync keeps its own (``OWN_PROPERTIES``), created in the account by the first
events push: the source's order or cart id and the source's name (which the search
before a create reads), the checkout link, the order's status and refunded amount.
The association type ids are HUBSPOT_DEFINED ones: deal to contact 3, deal to line
item 19 (docs/hubspot.md says where they come from). Values go as strings; times as
ISO 8601 in UTC, the platform's true instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from connectors.hubspot.commerce_bodies import number, stamp
from connectors.hubspot.config import HubSpotEvents
from connectors.hubspot.objects import ObjectKind
from crmsync.events import Event, EventKind

DEALS = "deals"
DEAL_TO_CONTACT = 3
DEAL_TO_LINE_ITEM = 19
ORDER_ID = "crmsync_order_id"
CART_ID = "crmsync_cart_id"
STORE = "crmsync_store"
CHECKOUT_URL = "crmsync_checkout_url"
ORDER_STATUS = "crmsync_order_status"
REFUNDED = "crmsync_refunded"
# crmsync's deal properties: name -> (label, HubSpot type, fieldType)
OWN_PROPERTIES: Mapping[str, tuple[str, str, str]] = {
    ORDER_ID: ("Order id (crmsync)", "string", "text"),
    CART_ID: ("Cart id (crmsync)", "string", "text"),
    STORE: ("Store (crmsync)", "string", "text"),
    CHECKOUT_URL: ("Checkout URL (crmsync)", "string", "text"),
    ORDER_STATUS: ("Order status (crmsync)", "string", "text"),
    REFUNDED: ("Refunded amount (crmsync)", "number", "number"),
}
ORDERS = ObjectKind(DEALS, "deal", ORDER_ID, STORE, DEAL_TO_CONTACT, DEAL_TO_LINE_ITEM)
CHECKOUTS = ObjectKind(DEALS, "deal", CART_ID, STORE, DEAL_TO_CONTACT, DEAL_TO_LINE_ITEM)

# the kinds deals take, and what each one writes there
DEAL_NAMES: Mapping[EventKind, str] = {
    EventKind.PLACED_ORDER: "deal",
    EventKind.FULFILLED_ORDER: "deal.crmsync_order_status",
    EventKind.CANCELLED_ORDER: "deal.dealstage (lost)",
    EventKind.REFUNDED_ORDER: "deal.crmsync_refunded",
    EventKind.STARTED_CHECKOUT: "deal (checkout)",
    EventKind.CHECKOUT_CLOSED: "deal (checkout) closed",
}
CHECKOUT_KINDS = frozenset({EventKind.STARTED_CHECKOUT, EventKind.CHECKOUT_CLOSED})
SCOPES = "crm.objects.deals.write, crm.objects.line_items.write, crm.schemas.deals.write"
LOST = frozenset({"cancelled", "refunded"})  # order statuses whose deal is lost
_KIND_STATUS = {
    EventKind.FULFILLED_ORDER: "fulfilled",
    EventKind.CANCELLED_ORDER: "cancelled",
}


def names(settings: HubSpotEvents) -> Mapping[EventKind, str]:
    """The kinds sent as deals: abandoned checkouts only where a stage takes them."""
    if settings.checkout_stage is None:
        return {k: v for k, v in DEAL_NAMES.items() if k not in CHECKOUT_KINDS}
    return DEAL_NAMES


def order_deal(event: Event, settings: HubSpotEvents) -> dict[str, str]:
    """A placed order's deal: won (or lost, for an order cancelled or wholly refunded
    before it was sent), closed at the order's instant."""
    found = {
        "dealname": f"Order {event.record_id}",
        "pipeline": settings.pipeline,
        "dealstage": settings.won_stage,
        "closedate": stamp(event.occurred_at),
        ORDER_ID: event.record_id,
        STORE: event.source,
    }
    if event.currency:
        found["deal_currency_code"] = event.currency
    if event.value is not None:
        found["amount"] = number(event.value)
    found.update(order_state(event, settings))
    return found


def order_state(event: Event, settings: HubSpotEvents) -> dict[str, str]:
    """The order's statuses now as its deal's properties, and the lost stage when it
    is cancelled or wholly refunded. Every event of an order carries the order's current
    statuses, so an older event sent again (a crash) never undoes a later change."""
    found: dict[str, str] = {}
    status = event.properties.get("status") or _KIND_STATUS.get(event.kind)
    if isinstance(status, str) and status:
        found[ORDER_STATUS] = status
    refunded = _amount(event.properties.get("refunded"))
    if refunded is None and event.kind is EventKind.REFUNDED_ORDER:
        refunded = event.value
    if refunded:
        found[REFUNDED] = number(refunded)
    if settings.lost_stage and _lost(event, status, refunded):
        found["pipeline"] = settings.pipeline
        found["dealstage"] = settings.lost_stage
    return found


def _lost(event: Event, status: object, refunded: Decimal | None) -> bool:
    if status in LOST:
        return True
    if event.kind is EventKind.REFUNDED_ORDER:
        total = _amount(event.properties.get("order_total"))
    else:
        total = event.value
    return refunded is not None and refunded > 0 and total is not None and refunded >= total


def checkout_deal(event: Event, settings: HubSpotEvents) -> dict[str, str]:
    """An abandoned checkout's open deal, with the link that finishes it."""
    assert settings.checkout_stage is not None  # checkouts are not taken without it
    found = {
        "dealname": f"Checkout {event.record_id}",
        "pipeline": settings.checkouts_pipeline,
        "dealstage": settings.checkout_stage,
        CART_ID: event.record_id,
        STORE: event.source,
    }
    if event.checkout_url:
        found[CHECKOUT_URL] = event.checkout_url
    if event.currency:
        found["deal_currency_code"] = event.currency
    if event.value is not None:
        found["amount"] = number(event.value)
    return found


def closed_checkout(settings: HubSpotEvents) -> dict[str, str]:
    """Where a converted or expired checkout's deal moves (with closed_checkout_stage)."""
    assert settings.closed_checkout_stage is not None
    return {"pipeline": settings.checkouts_pipeline, "dealstage": settings.closed_checkout_stage}


def property_body(name: str, group: str) -> dict[str, str]:
    """The create body of one of crmsync's deal properties."""
    label, kind, field_type = OWN_PROPERTIES[name]
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": "Written by crmsync from the store's orders and carts.",
    }


def _amount(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
