"""A fake WooCommerce store: a real HTTP server on 127.0.0.1 speaking the REST API v3.

It serves ``/wp-json/wc/v3/customers`` and ``/wp-json/wc/v3/orders`` the way WooCommerce
does for the REST source's preset: basic auth with a consumer key and secret, ``page`` and
``per_page`` (capped), ``X-WP-Total``/``X-WP-TotalPages`` and ``Link`` headers, ordering by
id, ``modified_after`` with ``dates_are_gmt`` on orders (and, like WooCommerce's core, *not*
on customers unless asked to), and WooCommerce's JSON field names.

Beyond what the preset needs, it also serves what a gap test needs: ``orderby=modified``
(on every collection, where WooCommerce itself takes it on orders only) with ``order=asc``
or ``desc``, ``offset`` (which WooCommerce takes in place of ``page``), and abandoned carts
at ``CARTS_PATH`` in the fake's own cart-plugin shape (``carts=True``).

The truth is kept as canonical records (only the fields WooCommerce can express), so a test
can compare what the source staged with what the server holds, exactly. The server's clock
is simulated and moves one second per change, so no two versions of a record share an
``updated_at`` (WooCommerce's times have one-second resolution).

Faults are injected on request: 429 with ``Retry-After``, 500s, timeouts (the handler
sleeps past the client's timeout), slow pages, a record duplicated across pages, and
changes to the data while a pull is paging through it (``Churn``): random changes, or
changes aimed at the collection being read: updates of records already served (in an
update-time order each one moves to the end and pushes an unread record back onto a page
already served), new records, or hard deletes.
"""

from __future__ import annotations

import base64
import bisect
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from crmsync.records import Cart, CartItem, Customer, Order, OrderLine, OrderStatus
from crmsync.sample import SampleSpec, iter_store

API = "/wp-json/wc/v3"
CARTS_PATH = "/wp-json/fake-carts/v1/carts"  # no cart API in WooCommerce's core: a plugin's
_ROUTES = {f"{API}/customers": "customers", f"{API}/orders": "orders", CARTS_PATH: "carts"}
_STATUS = {
    OrderStatus.PENDING: "pending",
    OrderStatus.PAID: "processing",
    OrderStatus.FULFILLED: "completed",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.REFUNDED: "refunded",
}


@dataclass
class Faults:
    """What goes wrong, and how often (chance per page request), seeded for repeatability."""

    rate_429: float = 0.0
    retry_after: str = "0"
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    timeout_sleep: float = 1.0  # must exceed the client's read timeout
    rate_slow: float = 0.0
    slow_sleep: float = 0.05
    rate_duplicate: float = 0.0  # the previous page's last record repeated on this page
    script: list[str] = field(default_factory=list)  # forced faults for the next requests
    seed: int = 1


@dataclass
class Churn:
    """How the store changes while a pull pages through it.

    ``mode`` says what a burst does: ``random`` updates customers and orders anywhere and
    adds customers; the others act on the collection whose page was just served:
    ``behind`` updates records already served in this listing, ``insert`` adds records and
    ``delete`` hard-deletes records already served.
    """

    every_pages: int = 0  # 0 = never during a pull
    changes: int = 5  # per burst
    mode: str = "random"  # random | behind | insert | delete
    bursts: int = 0  # per collection; 0 = no limit
    seed: int = 2


def _gmt(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _local(moment: datetime) -> str:
    local = moment.astimezone(UTC).replace(tzinfo=None) + timedelta(hours=3)
    return local.isoformat(timespec="seconds")


def _money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _second(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC).replace(microsecond=0)


class FakeWooCommerce:
    """The store's data, its clock and its faults; ``serve_woocommerce`` puts it on a port."""

    def __init__(
        self,
        *,
        customers: int = 200,
        orders_per_customer: float = 1.0,
        seed: int = 7,
        consumer_key: str = "ck_fake_0123456789abcdef",
        consumer_secret: str = "cs_fake_fedcba9876543210",
        max_per_page: int = 100,
        customers_modified_after: bool = False,
        faults: Faults | None = None,
        churn: Churn | None = None,
        carts: bool = False,
    ) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.max_per_page = max_per_page
        self.customers_modified_after = customers_modified_after
        self.faults = faults or Faults()
        self.churn = churn or Churn()
        self.injected: Counter[str] = Counter()
        self.requests: list[str] = []
        self.base_url = ""
        self._lock = threading.RLock()
        self._fault_rng = random.Random(self.faults.seed)
        self._churn_rng = random.Random(self.churn.seed)
        self._page_requests = 0
        self._version = 0
        self._filtered: dict[tuple[str, int | None, str, str | None, int], list[int]] = {}
        self.serves_carts = carts
        self.customers: dict[int, Customer] = {}
        self.orders: dict[int, Order] = {}
        self.carts: dict[int, Cart] = {}
        streams = ("customers", "orders", "carts")
        self._json: dict[str, dict[int, bytes]] = {s: {} for s in streams}
        self._modified: dict[str, dict[int, int]] = {s: {} for s in streams}
        self._ids: dict[str, list[int]] = {s: [] for s in streams}
        spec = SampleSpec(customers=customers, seed=seed, orders_per_customer=orders_per_customer)
        self.clock = spec.now.astimezone(UTC).replace(microsecond=0)
        for record in iter_store(spec):
            if isinstance(record, Customer) and not record.deleted:
                self._put_customer(self._truthful_customer(record))
            elif isinstance(record, Order):
                self._put_order(self._truthful_order(record))
            elif isinstance(record, Cart) and carts:
                self._put_cart(self._truthful_cart(record))

    # --- the truth ----------------------------------------------------------------------

    @staticmethod
    def _truthful_customer(c: Customer) -> Customer:
        """Only what WooCommerce's customer object can say, at one-second resolution."""
        return Customer(
            c.external_id, c.email, c.phone, c.first_name, c.last_name, c.city, c.region,
            c.country, c.postal_code, c.address1, created_at=_second(c.created_at),
            updated_at=_second(c.updated_at),
        )  # fmt: skip

    @staticmethod
    def _truthful_order(o: Order) -> Order:
        lines = tuple(
            OrderLine(line.sku, line.product, None, line.quantity, line.unit_price, line.discount)
            for line in o.lines
        )
        return Order(
            o.external_id, o.customer_external_id, o.email, _second(o.placed_at) or o.placed_at,
            o.status, o.currency, o.total, o.discount_total, o.refunded_total,
            _second(o.updated_at), lines,
        )  # fmt: skip

    @staticmethod
    def _truthful_cart(c: Cart) -> Cart:
        items = tuple(
            CartItem(item.sku, item.product, None, item.quantity, item.unit_price)
            for item in c.items
        )
        return replace(
            c, created_at=_second(c.created_at), updated_at=_second(c.updated_at), items=items
        )

    def now(self) -> datetime:
        """The server's clock: what a run started 'now' passes as ``until``."""
        with self._lock:
            return self.clock

    def tick(self, seconds: int = 1) -> datetime:
        with self._lock:
            self.clock += timedelta(seconds=seconds)
            return self.clock

    def truth(self) -> tuple[dict[str, Customer], dict[str, Order]]:
        with self._lock:
            return (
                {str(i): c for i, c in self.customers.items()},
                {str(i): o for i, o in self.orders.items()},
            )

    def cart_truth(self) -> dict[str, Cart]:
        with self._lock:
            return {str(i): c for i, c in self.carts.items()}

    # --- changes ------------------------------------------------------------------------

    def change(self, count: int) -> None:
        """``count`` changes: customers and orders updated, new customers with an order."""
        with self._lock:
            rng = self._churn_rng
            for _ in range(count):
                roll = rng.random()
                if roll < 0.4 and self.customers:
                    self._update_customer(rng.choice(self._ids["customers"]), rng)
                elif roll < 0.8 and self.orders:
                    self._update_order(rng.choice(self._ids["orders"]), rng)
                else:
                    self._new_customer(rng)

    def touch(self, stream: str, count: int) -> None:
        """``count`` updates of records of one collection (customers, orders or carts)."""
        with self._lock:
            rng = self._churn_rng
            for number in rng.sample(self._ids[stream], min(count, len(self._ids[stream]))):
                self._update(stream, number, rng)

    def _update(self, stream: str, number: int, rng: random.Random) -> None:
        if stream == "customers":
            self._update_customer(number, rng)
        elif stream == "orders":
            self._update_order(number, rng)
        else:
            self._update_cart(number)

    def _update_customer(self, number: int, rng: random.Random) -> None:
        customer = self.customers[number]
        cities = ("Ankara", "İstanbul", "Bursa", "Antalya", "Eskişehir")
        changed = replace(
            customer,
            first_name=f"{customer.first_name or 'Ad'}{rng.randint(0, 9)}"[-40:],
            city=rng.choice(cities),
            updated_at=self.tick(),
        )
        self._put_customer(changed)

    def _update_order(self, number: int, rng: random.Random) -> None:
        order = self.orders[number]
        status = rng.choice([OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.REFUNDED])
        refunded = order.total if status == OrderStatus.REFUNDED else Decimal(0)
        changed = replace(order, status=status, refunded_total=refunded, updated_at=self.tick())
        self._put_order(changed)

    def _new_customer(self, rng: random.Random) -> None:
        number = (self._ids["customers"][-1] if self._ids["customers"] else 100_000) + 1
        moment = self.tick()
        customer = Customer(
            external_id=str(number),
            email=f"new{number}@example.org",
            phone=f"+90532{rng.randint(1_000_000, 9_999_999)}",
            first_name="Yeni",
            last_name="Müşteri",
            city="İzmir",
            country="TR",
            created_at=moment,
            updated_at=moment,
        )
        self._put_customer(customer)
        order_number = (self._ids["orders"][-1] if self._ids["orders"] else 10_000_000) + 1
        price = Decimal(rng.randint(1000, 99999)).scaleb(-2)
        order = Order(
            external_id=str(order_number),
            customer_external_id=str(number),
            email=customer.email,
            placed_at=moment,
            status=OrderStatus.PAID,
            currency="TRY",
            total=price * 2,
            updated_at=moment,
            lines=(OrderLine("NEW-1", "Yeni Ürün", None, 2, price),),
        )
        self._put_order(order)

    def _update_cart(self, number: int) -> None:
        cart = self.carts[number]
        self._put_cart(replace(cart, value=cart.value + Decimal(1), updated_at=self.tick()))

    def _new_order(self, rng: random.Random) -> None:
        customer = self.customers[rng.choice(self._ids["customers"])]
        number = (self._ids["orders"][-1] if self._ids["orders"] else 10_000_000) + 1
        moment = self.tick()
        price = Decimal(rng.randint(1000, 99999)).scaleb(-2)
        order = Order(
            str(number), customer.external_id, customer.email, moment, OrderStatus.PENDING,
            "TRY", price, updated_at=moment, lines=(OrderLine("NEW-2", "Ürün", None, 1, price),),
        )  # fmt: skip
        self._put_order(order)

    def _new_cart(self, rng: random.Random) -> None:
        customer = self.customers[rng.choice(self._ids["customers"])]
        number = (self._ids["carts"][-1] if self._ids["carts"] else 30_000_000) + 1
        moment = self.tick()
        price = Decimal(rng.randint(1000, 99999)).scaleb(-2)
        cart = Cart(
            str(number), customer.external_id, customer.email, "TRY", price * 3,
            created_at=moment, updated_at=moment,
            checkout_url=f"https://shop.example.com/checkout/{number}",
            items=(CartItem("NEW-3", "Sepet Ürünü", None, 3, price),),
        )  # fmt: skip
        self._put_cart(cart)

    def _churn(self, stream: str, served: list[int]) -> None:
        """One burst of ``self.churn``; ``served`` are the ids this listing has served."""
        churn, rng = self.churn, self._churn_rng
        if churn.mode == "random":
            self.change(churn.changes)
            return
        if churn.mode == "insert":
            add = {"customers": self._new_customer, "orders": self._new_order}
            for _ in range(churn.changes):
                add.get(stream, self._new_cart)(rng)
            return
        chosen = rng.sample(served, min(churn.changes, len(served)))
        for number in chosen:
            if churn.mode == "delete":
                self._delete(stream, number)
            else:
                self._update(stream, number, rng)

    def _delete(self, stream: str, number: int) -> None:
        """A hard delete: the record leaves the listing and the truth."""
        records: dict[int, Any] = getattr(self, stream)
        del records[number]
        del self._json[stream][number]
        del self._modified[stream][number]
        self._ids[stream].remove(number)
        self._version += 1

    def _put_customer(self, customer: Customer) -> None:
        number = int(customer.external_id)
        if number not in self.customers:
            ids = self._ids["customers"]
            if ids and number < ids[-1]:
                bisect.insort(ids, number)
            else:
                ids.append(number)
        self.customers[number] = customer
        self._json["customers"][number] = orjson.dumps(render_customer(customer))
        self._modified["customers"][number] = _epoch(customer.updated_at or customer.created_at)
        self._version += 1

    def _put_order(self, order: Order) -> None:
        number = int(order.external_id)
        if number not in self.orders:
            ids = self._ids["orders"]
            if ids and number < ids[-1]:
                bisect.insort(ids, number)
            else:
                ids.append(number)
        self.orders[number] = order
        self._json["orders"][number] = orjson.dumps(render_order(order))
        self._modified["orders"][number] = _epoch(order.updated_at or order.placed_at)
        self._version += 1

    def _put_cart(self, cart: Cart) -> None:
        number = int(cart.external_id)
        if number not in self.carts:
            ids = self._ids["carts"]
            if ids and number < ids[-1]:
                bisect.insort(ids, number)
            else:
                ids.append(number)
        self.carts[number] = cart
        self._json["carts"][number] = orjson.dumps(render_cart(cart))
        self._modified["carts"][number] = _epoch(cart.updated_at or cart.created_at)
        self._version += 1

    # --- serving ------------------------------------------------------------------------

    def authorised(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.consumer_key}:{self.consumer_secret}".encode())
        return header == f"Basic {expected.decode()}"

    def next_fault(self) -> str | None:
        with self._lock:
            faults = self.faults
            if faults.script:
                return faults.script.pop(0) or None
            rng = self._fault_rng
            for kind, rate in (
                ("429", faults.rate_429),
                ("500", faults.rate_500),
                ("timeout", faults.rate_timeout),
                ("slow", faults.rate_slow),
                ("duplicate", faults.rate_duplicate),
            ):
                if rate and rng.random() < rate:
                    return kind
            return None

    def page(
        self, stream: str, query: dict[str, str], *, duplicate: bool = False
    ) -> tuple[bytes, dict[str, str]] | str:
        """The body and headers of one page, or an error code for a bad request."""
        try:
            number = int(query.get("page", "1"))
            per_page = int(query.get("per_page", "10"))
            offset = int(query["offset"]) if "offset" in query else None
        except ValueError:
            return "rest_invalid_param"
        if number < 1 or not 1 <= per_page <= self.max_per_page or (offset or 0) < 0:
            return "rest_invalid_param"
        by = query.get("orderby", "id")
        if by not in ("id", "modified") or query.get("order", "asc") not in ("asc", "desc"):
            return "rest_invalid_param"
        since = query.get("modified_after")
        honoured = stream != "customers" or self.customers_modified_after
        with self._lock:
            ids = self._matching(stream, since if honoured else None, by, query.get("order"))
            start = (number - 1) * per_page if offset is None else offset
            chosen = ids[start : start + per_page]
            parts = [self._json[stream][i] for i in chosen]
            if duplicate and start > 0 and chosen:
                parts.insert(0, self._json[stream][ids[start - 1]])
                self.injected["duplicate"] += 1
            self._page_requests += 1
            churn = self.churn
            if (
                churn.every_pages
                and self._page_requests % churn.every_pages == 0
                and (not churn.bursts or self.injected[f"churn:{stream}"] < churn.bursts)
            ):
                self._churn(stream, ids[: start + len(chosen)])
                self.injected["churn"] += 1
                self.injected[f"churn:{stream}"] += 1
        total_pages = max(1, math.ceil(len(ids) / per_page)) if ids else 0
        headers = {"X-WP-Total": str(len(ids)), "X-WP-TotalPages": str(total_pages)}
        return b"[" + b",".join(parts) + b"]", headers

    def _matching(
        self, stream: str, since: str | None, by: str = "id", order: str | None = None
    ) -> list[int]:
        """The listing's ids in the order asked for: by id, or by modification time (ties
        by id), ascending unless ``order`` is ``desc``."""
        after = None
        if since:
            moment = datetime.fromisoformat(since)
            after = _epoch(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
        key = (stream, after, by, order, self._version)
        found = self._filtered.get(key)
        if found is None:
            if len(self._filtered) > 64:
                self._filtered.clear()
            ids = self._ids[stream]
            modified = self._modified[stream]
            found = list(ids) if after is None else [i for i in ids if modified[i] > after]
            if by == "modified":
                found.sort(key=lambda i: (modified[i], i))
            if order == "desc":
                found.reverse()
            self._filtered[key] = found
        return found


def _epoch(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp())


def _address(customer_like: Any, email: str | None, phone: str | None) -> dict[str, str]:
    return {
        "first_name": getattr(customer_like, "first_name", None) or "",
        "last_name": getattr(customer_like, "last_name", None) or "",
        "company": "",
        "address_1": getattr(customer_like, "address1", None) or "",
        "address_2": "",
        "city": getattr(customer_like, "city", None) or "",
        "state": getattr(customer_like, "region", None) or "",
        "postcode": getattr(customer_like, "postal_code", None) or "",
        "country": getattr(customer_like, "country", None) or "",
        "email": email or "",
        "phone": phone or "",
    }


def render_customer(customer: Customer) -> dict[str, Any]:
    """A customer as WooCommerce's ``GET /customers`` lists it."""
    created = customer.created_at or datetime(2020, 1, 1, tzinfo=UTC)
    modified = customer.updated_at
    return {
        "id": int(customer.external_id),
        "date_created": _local(created),
        "date_created_gmt": _gmt(created),
        "date_modified": _local(modified) if modified else None,
        "date_modified_gmt": _gmt(modified) if modified else None,
        "email": customer.email or "",
        "first_name": customer.first_name or "",
        "last_name": customer.last_name or "",
        "role": "customer",
        "username": (customer.email or customer.external_id).split("@")[0],
        "billing": _address(customer, customer.email, customer.phone),
        "shipping": _address(customer, None, None) | {"phone": ""},
        "is_paying_customer": True,
        "avatar_url": "https://secure.gravatar.com/avatar/0?s=96&d=mm&r=g",
        "meta_data": [],
        "_links": {"self": [{"href": f"{API}/customers/{customer.external_id}"}]},
    }


def render_order(order: Order) -> dict[str, Any]:
    """An order as WooCommerce's ``GET /orders`` lists it (money as decimal strings)."""
    lines = []
    for index, line in enumerate(order.lines, start=1):
        subtotal = line.unit_price * line.quantity
        total = subtotal - line.discount
        lines.append(
            {
                "id": int(order.external_id) * 10 + index,
                "name": line.product or "",
                "product_id": index,
                "variation_id": 0,
                "quantity": line.quantity,
                "tax_class": "",
                "subtotal": _money(subtotal),
                "subtotal_tax": "0.00",
                "total": _money(total),
                "total_tax": "0.00",
                "taxes": [],
                "meta_data": [],
                "sku": line.sku or "",
                "price": float(total / line.quantity),
            }
        )
    refunds = (
        [{"id": int(order.external_id) + 1, "reason": "", "total": f"-{order.refunded_total:.2f}"}]
        if order.refunded_total
        else []
    )
    modified = order.updated_at or order.placed_at
    return {
        "id": int(order.external_id),
        "parent_id": 0,
        "number": order.external_id,
        "order_key": f"wc_order_{order.external_id}",
        "created_via": "checkout",
        "version": "9.0.0",
        "status": _STATUS[order.status],
        "currency": order.currency,
        "date_created": _local(order.placed_at),
        "date_created_gmt": _gmt(order.placed_at),
        "date_modified": _local(modified),
        "date_modified_gmt": _gmt(modified),
        "discount_total": _money(order.discount_total),
        "discount_tax": "0.00",
        "shipping_total": "0.00",
        "shipping_tax": "0.00",
        "cart_tax": "0.00",
        "total": _money(order.total),
        "total_tax": "0.00",
        "prices_include_tax": False,
        "customer_id": int(order.customer_external_id) if order.customer_external_id else 0,
        "billing": {"email": order.email or "", "first_name": "", "last_name": ""},
        "shipping": {},
        "payment_method": "bacs",
        "line_items": lines,
        "refunds": refunds,
        "meta_data": [],
    }


def render_cart(cart: Cart) -> dict[str, Any]:
    """An abandoned or converted cart as the fake cart plugin lists it."""
    return {
        "id": int(cart.external_id),
        "customer_id": int(cart.customer_external_id) if cart.customer_external_id else 0,
        "email": cart.email or "",
        "currency": cart.currency,
        "total": _money(cart.value),
        "status": "converted" if cart.converted else "abandoned",
        "date_created_gmt": _gmt(cart.created_at) if cart.created_at else None,
        "date_modified_gmt": _gmt(cart.updated_at) if cart.updated_at else None,
        "checkout_url": cart.checkout_url or "",
        "items": [
            {
                "sku": item.sku or "",
                "name": item.product or "",
                "quantity": item.quantity,
                "price": _money(item.unit_price),
            }
            for item in cart.items
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stalls
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output quiet

    def do_GET(self) -> None:
        store = self.server.store
        parts = urlsplit(self.path)
        store.requests.append(self.path)
        if not store.authorised(self.headers.get("Authorization")):
            self._json(401, {"code": "woocommerce_rest_cannot_view", "data": {"status": 401}})
            return
        stream = _ROUTES.get(parts.path.rstrip("/"))
        if stream is None or (stream == "carts" and not store.serves_carts):
            self._json(404, {"code": "rest_no_route", "data": {"status": 404}})
            return
        fault = store.next_fault()
        if fault and fault != "duplicate":  # counted by page(), where it takes effect
            store.injected[fault] += 1
        if fault == "429":
            self._json(
                429, {"code": "too_many_requests"}, {"Retry-After": store.faults.retry_after}
            )
            return
        if fault == "500":
            self._json(500, {"code": "internal_server_error"})
            return
        if fault == "timeout":
            time.sleep(store.faults.timeout_sleep)
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(store.faults.slow_sleep)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        result = store.page(stream, query, duplicate=fault == "duplicate")
        if isinstance(result, str):
            self._json(400, {"code": result, "message": "Invalid parameter(s): per_page"})
            return
        body, headers = result
        page = int(query.get("page", "1"))
        if "offset" not in query and page < int(headers["X-WP-TotalPages"]):
            following = urlencode({**query, "page": str(page + 1)})  # the query kept, as WP does
            headers["Link"] = f'<{store.base_url}{parts.path}?{following}>; rel="next"'
        self._send(200, body, headers)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(payload), headers or {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, store: FakeWooCommerce) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = store

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that gave up on a slow page is expected here


@contextmanager
def serve_woocommerce(store: FakeWooCommerce) -> Iterator[FakeWooCommerce]:
    """Serves ``store`` on a free port of 127.0.0.1 until the block ends."""
    server = _Server(store)
    host, port = server.server_address[:2]
    store.base_url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
