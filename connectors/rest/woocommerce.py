"""The WooCommerce REST API v3 preset (``preset = "woocommerce"``).

Facts from WooCommerce's REST API documentation: collections live under
``/wp-json/wc/v3``, list endpoints take ``page``/``per_page`` (at most 100) and answer
with ``X-WP-Total``/``X-WP-TotalPages`` headers, keys authenticate as HTTP basic auth
(consumer key as user name, consumer secret as password) over HTTPS, orders accept
``modified_after`` with ``dates_are_gmt``, and every ``*_gmt`` time is a naive ISO time
in UTC. Money is a decimal string; refunds are listed with negative totals.

Choices made here, and why:

- Pages are ordered by ``id`` ascending, declared as ``order = "id"``. Ordering by
  modification time would move a record updated during the read to the end and shift
  the rest of the pages, so one record could be skipped (the source would then have to
  re-read the listing); by id an update keeps its place and a new record takes the next
  id at the end, so nothing slides onto a page already read. Only a hard delete during
  the read can still do that (a customer can be deleted outright; an order usually goes
  to the trash, which is a status change).
- Customers get ``modified_after`` as well, although WooCommerce's core customers
  endpoint ignores it (open enhancement request #31482): it costs nothing, and the
  source filters by ``date_modified_gmt`` locally either way, so only changed customers
  reach staging.
- No ``modified_before``: a record updated during the read would leave the filtered set
  and shift later records onto pages already read. The source drops records newer than
  the run's start instead; the next run takes them.
- Unit price is ``subtotal / quantity`` (before discounts) and the line discount is
  ``subtotal - total``, because WooCommerce's ``price`` is already discounted.
- Carts are not part of WooCommerce's core API, so the preset has no carts stream.
"""

from __future__ import annotations

from typing import Any

_ORDER_STATUS = {
    "on-hold": "pending",
    "checkout-draft": "pending",
    "failed": "cancelled",
    "trash": "cancelled",
}

_COMMON_STREAM: dict[str, Any] = {
    "records_path": "",
    "pagination": {"type": "page", "param": "page", "total_pages_header": "X-WP-TotalPages"},
    "page_size_param": "per_page",
    "page_size": 100,
    "params": {"orderby": "id", "order": "asc", "dates_are_gmt": "true"},
    "incremental_param": "modified_after",
    "incremental_format": "strftime",
    "incremental_strftime": "%Y-%m-%dT%H:%M:%S",
    "order": "id",  # a change keeps its place: nothing to re-read (see the notes above)
}

_UPDATED_AT = {"path": ["date_modified_gmt", "date_created_gmt"], "timezone": "UTC"}

WOOCOMMERCE: dict[str, Any] = {
    "auth": {"type": "basic"},
    "headers": {"Accept": "application/json"},
    "streams": {
        "customers": {
            **_COMMON_STREAM,
            "path": "/wp-json/wc/v3/customers",
            "fields": {
                "external_id": "id",
                "email": {"path": ["email", "billing.email"]},
                "first_name": {"path": ["first_name", "billing.first_name"]},
                "last_name": {"path": ["last_name", "billing.last_name"]},
                "phone": "billing.phone",
                "city": "billing.city",
                "region": "billing.state",
                "country": "billing.country",
                "postal_code": "billing.postcode",
                "address1": "billing.address_1",
                "created_at": {"path": "date_created_gmt", "timezone": "UTC"},
                "updated_at": _UPDATED_AT,
            },
        },
        "orders": {
            **_COMMON_STREAM,
            "path": "/wp-json/wc/v3/orders",
            "fields": {
                "external_id": "id",
                "customer_external_id": {"path": "customer_id", "null_if": ["0"]},
                "email": "billing.email",
                "placed_at": {"path": "date_created_gmt", "timezone": "UTC"},
                "updated_at": _UPDATED_AT,
                "status": {"path": "status", "map": _ORDER_STATUS},
                "currency": "currency",
                "total": "total",
                "discount_total": "discount_total",
                "refunded_total": {"path": "refunds", "sum": "total", "abs": True},
            },
            "lines": {
                "path": "line_items",
                "fields": {
                    "sku": "sku",
                    "product": "name",
                    "quantity": "quantity",
                    "unit_price": {"path": "subtotal", "per": "quantity"},
                    "discount": {"path": "subtotal", "minus": "total"},
                },
            },
        },
    },
}
