"""Events into HubSpot's commerce objects (``[events] objects = "commerce"``, the
default): orders and carts with their line items, associated with the contact.

HubSpot's workflows read objects: an abandoned-cart workflow enrols a cart (with its
``hs_cart_url``) associated with a contact, a post-purchase one an order, or an order
whose ``hs_fulfillment_status`` changed. So:

- placed order: its line items (batch create), then the order (batch create) with its
  properties and its associations to the contact (507) and the line items (513);
- fulfilled, cancelled, refunded order: a batch update of the order's statuses;
- started checkout: the cart, as the order (586, 590), with its ``hs_cart_url``;
  closed checkout: the cart archived (one not there is what was wanted: OK);
- ordered product: not taken, its order's line items carry it.

The steps are the ones deals take too (``object_events``; the reads ``objects``, the
writes ``object_writes``): contacts from the people's ledger, else read by e-mail; an
order's or cart's id for a status update or an archive from the event ledger; a search
on ``hs_external_order_id`` / ``hs_external_cart_id`` (with ``hs_source_store``) only for
the records that may already be there, so a resend creates nothing. Measured on a
generated store's first sync (docs/events.md): 1.05 times the floor of one call per 100
objects written (3.26 times with a read and a search per 100 events).

A backfill's past placed orders go with their true ``hs_external_created_date``, which
a workflow filters on; its past started checkouts are not sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.hubspot import commerce_bodies as bodies
from connectors.hubspot.object_events import ObjectEvents
from crmsync.events import Event, EventKind


class CommerceSender(ObjectEvents):
    """Sends one batch of events as HubSpot commerce objects, one result per event."""

    ORDERS = bodies.ORDER_OBJECTS
    CARTS = bodies.CART_OBJECTS
    OBJECTS = "commerce objects"
    NO_KIND = "HubSpot takes no {0} events"
    NO_ORDER = "HubSpot has no order {0} (its placed order was not sent yet)"
    NO_SCOPE = (
        "the HubSpot private app lacks a scope for orders, carts or line items ({0}); "
        f"grant {bodies.SCOPES} under Settings > Integrations > Private apps"
    )

    def names(self) -> Mapping[EventKind, str]:
        return bodies.EVENT_NAMES

    def order(self, event: Event) -> dict[str, str]:
        return bodies.order_properties(event)

    def status(self, event: Event) -> dict[str, str]:
        return bodies.status_properties(event)

    def cart(self, event: Event) -> dict[str, str]:
        return bodies.cart_properties(event)
