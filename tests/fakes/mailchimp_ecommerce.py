"""The fake Mailchimp's e-commerce API: stores, products and variants, orders, carts.

Registered on ``tests.fakes.mailchimp``'s routes (that module imports this one at its
end), so every request is checked against the same spec and goes through the same
faults, concurrency cap and counters. Modelled on Mailchimp: a store belongs to one
audience; a product is created with at least one variant; an order's or cart's lines
must name variants the store has; an order or a cart upserts its customer, and a
customer who is not on the audience yet becomes a member, ``transactional`` unless
``opt_in_status`` is true (then ``subscribed``, which the fixture's consent check
catches as a subscription nobody consented to); an existing member is never changed
by a customer. A duplicate store or cart is a 400, a missing one a 404.

``triggers`` records what would start an automation: a new order, a status change of
an order, a cart with a ``checkout_url``, each while its store was not ``is_syncing``
(which is how Mailchimp pauses a store's automations during a sync); ``paused`` the
same things that arrived while it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.mailchimp import (
    ApiError,
    FakeMailchimp,
    _only,
    _page,
    now_text,
    route,
    subscriber_hash,
)

_STORE_FIELDS = ("id", "list_id", "name", "currency_code", "platform", "is_syncing", "domain")


@dataclass
class FakeStore:
    id: str
    list_id: str
    name: str
    currency_code: str
    is_syncing: bool = False
    platform: str = ""
    products: dict[str, dict[str, Any]] = field(default_factory=dict)  # with "variants" by id
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    carts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list_id": self.list_id,
            "name": self.name,
            "currency_code": self.currency_code,
            "platform": self.platform,
            "is_syncing": self.is_syncing,
        }


def _missing() -> ApiError:
    return ApiError(404, "Resource Not Found", "The requested resource could not be found.")


def _invalid(detail: str) -> ApiError:
    return ApiError(400, "Invalid Resource", detail)


def _store(fake: FakeMailchimp, params: dict[str, str]) -> FakeStore:
    found = fake.stores.get(params["store_id"])
    if not isinstance(found, FakeStore):
        raise _missing()
    return found


def _note(fake: FakeMailchimp, store: FakeStore, what: str, record: str) -> None:
    (fake.paused if store.is_syncing else fake.triggers).append((store.id, what, record))


def _upsert_customer(fake: FakeMailchimp, store: FakeStore, body: dict[str, Any]) -> None:
    known = store.customers.get(body["id"])
    email = body.get("email_address") or (known or {}).get("email_address")
    if not email:
        raise _invalid("A new customer needs an email_address.")
    customer = {**(known or {}), **body, "email_address": email}
    customer.setdefault("opt_in_status", False)
    store.customers[body["id"]] = customer
    audience = fake.lists[store.list_id]
    if subscriber_hash(email) not in audience.members:
        status = "subscribed" if customer["opt_in_status"] else "transactional"
        fake._create_member(audience, email, status, {})


def _check_lines(store: FakeStore, lines: list[dict[str, Any]]) -> None:
    for line in lines:
        product = store.products.get(line.get("product_id", ""))
        if product is None or line.get("product_variant_id") not in product["variants"]:
            raise _invalid(
                f"A product with the provided ID does not exist in the account for "
                f"variant {line.get('product_variant_id')!r} of {line.get('product_id')!r}."
            )


def _order_view(order: dict[str, Any]) -> dict[str, Any]:
    customer = order["customer"]
    return {
        **{k: v for k, v in order.items() if k not in ("customer", "lines")},
        "customer": {
            "id": customer["id"],
            "email_address": customer.get("email_address", ""),
            "opt_in_status": bool(customer.get("opt_in_status")),
        },
        "lines": [dict(line) for line in order["lines"]],
    }


# -- stores ---------------------------------------------------------------------------


@route("POST", "/ecommerce/stores")
def _add_store(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    if body["id"] in fake.stores:
        raise _invalid("A store with the provided ID already exists.")
    if body["list_id"] not in fake.lists:
        raise _invalid(f"The list {body['list_id']!r} does not exist.")
    store = FakeStore(
        body["id"],
        body["list_id"],
        body["name"],
        body["currency_code"],
        bool(body.get("is_syncing")),
        body.get("platform", ""),
    )
    fake.stores[store.id] = store
    return 200, store.view()


@route("GET", "/ecommerce/stores")
def _list_stores(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    views = [
        _only(store.view(), query, "stores") for store in _page(list(fake.stores.values()), query)
    ]
    return 200, {"stores": views, "total_items": len(fake.stores)}


@route("GET", "/ecommerce/stores/{store_id}")
def _get_store(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    view = _store(fake, params).view()
    wanted = [f for f in query.get("fields", "").split(",") if f]
    return 200, {k: v for k, v in view.items() if k in wanted} if wanted else view


@route("PATCH", "/ecommerce/stores/{store_id}")
def _patch_store(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    for name in ("name", "currency_code", "platform"):
        if name in body:
            setattr(store, name, body[name])
    if "is_syncing" in body:
        store.is_syncing = bool(body["is_syncing"])
        fake.syncing_changes.append((store.id, store.is_syncing))
    return 200, store.view()


# -- catalogue --------------------------------------------------------------------------


@route("PUT", "/ecommerce/stores/{store_id}/products/{product_id}")
def _put_product(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    if body.get("id") != params["product_id"]:
        raise _invalid("The product id in the body does not match the URL.")
    known = store.products.get(body["id"])
    variants = {v["id"]: dict(v) for v in body.get("variants") or ()}
    if known is None and not variants:
        raise _invalid("A product needs at least one variant.")
    product = {**(known or {}), **{k: v for k, v in body.items() if k != "variants"}}
    product["variants"] = {**((known or {}).get("variants") or {}), **variants}
    store.products[body["id"]] = product
    return 200, {**product, "variants": list(product["variants"].values())}


@route("PUT", "/ecommerce/stores/{store_id}/products/{product_id}/variants/{variant_id}")
def _put_variant(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    product = store.products.get(params["product_id"])
    if product is None:
        raise _missing()
    if body.get("id") != params["variant_id"]:
        raise _invalid("The variant id in the body does not match the URL.")
    product["variants"][body["id"]] = dict(body)
    return 200, dict(body)


# -- orders -----------------------------------------------------------------------------


@route("PUT", "/ecommerce/stores/{store_id}/orders/{order_id}")
def _put_order(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    if body.get("id") != params["order_id"]:
        raise _invalid("The order id in the body does not match the URL.")
    known = store.orders.get(body["id"])
    if known is None:
        for name in ("customer", "currency_code", "order_total", "lines"):
            if name not in body:
                raise _invalid(f"A new order needs {name}.")
    _check_lines(store, body.get("lines") or [])
    if "customer" in body:
        _upsert_customer(fake, store, body["customer"])
    customer_id = (body.get("customer") or (known or {})["customer"])["id"]
    order = {**(known or {}), **body, "customer": store.customers[customer_id]}
    order.setdefault("created_at", now_text())
    order["updated_at"] = now_text()
    store.orders[body["id"]] = order
    if known is None:
        _note(fake, store, "order", body["id"])
    return 200, _order_view(order)


@route("PATCH", "/ecommerce/stores/{store_id}/orders/{order_id}")
def _patch_order(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    order = store.orders.get(params["order_id"])
    if order is None:
        raise _missing()
    if "lines" in body:
        raise _invalid("The fake takes an order's lines by PUT only.")
    for name in ("financial_status", "fulfillment_status"):
        if name in body and body[name] != order.get(name):
            _note(fake, store, f"{name}:{body[name]}", order["id"])
    order.update({k: v for k, v in body.items() if k != "customer"})
    order["updated_at"] = now_text()
    return 200, _order_view(order)


# -- carts ------------------------------------------------------------------------------


@route("POST", "/ecommerce/stores/{store_id}/carts")
def _add_cart(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    if body["id"] in store.carts:
        raise _invalid("A cart with the provided ID already exists in the account.")
    _check_lines(store, body["lines"])
    _upsert_customer(fake, store, body["customer"])
    cart = {**body, "customer": store.customers[body["customer"]["id"]]}
    cart["created_at"] = cart["updated_at"] = now_text()
    store.carts[body["id"]] = cart
    if body.get("checkout_url"):
        _note(fake, store, "cart", body["id"])
    return 200, _order_view(cart)


@route("GET", "/ecommerce/stores/{store_id}/carts/{cart_id}")
def _get_cart(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    cart = _store(fake, params).carts.get(params["cart_id"])
    if cart is None:
        raise _missing()
    return 200, _order_view(cart)


@route("PATCH", "/ecommerce/stores/{store_id}/carts/{cart_id}")
def _patch_cart(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    cart = store.carts.get(params["cart_id"])
    if cart is None:
        raise _missing()
    if "lines" in body or "customer" in body:
        raise _invalid("The fake takes a cart's lines and customer by POST only.")
    if body.get("checkout_url") and not cart.get("checkout_url"):
        _note(fake, store, "cart", cart["id"])
    cart.update(body)
    cart["updated_at"] = now_text()
    return 200, _order_view(cart)


@route("DELETE", "/ecommerce/stores/{store_id}/carts/{cart_id}")
def _delete_cart(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    store = _store(fake, params)
    if store.carts.pop(params["cart_id"], None) is None:
        raise _missing()
    return 204, None
