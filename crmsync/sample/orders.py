"""Orders and carts for one sample customer at a time.

Order counts are skewed the way shops see them: about one customer in ten never buys,
many buy once, and a loyal minority buys a great deal; the mean is the spec's
``orders_per_customer``. Everything is computed in whole kuruş and epoch seconds and
turned into Decimals and datetimes only once per value, since benchmarks stream millions.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from datetime import UTC, datetime
from decimal import Decimal

from crmsync.records import Cart, CartItem, Order, OrderLine, OrderStatus
from crmsync.sample.catalog import Catalog, Product
from crmsync.sample.spec import Frame, money, utc

DAY = 86400
ZERO = money(0)
DISCOUNT_PERCENTS = (5, 10, 10, 15, 20, 20, 25, 30, 40, 50)
CHECKOUT_URL = "https://shop.example.com/checkout/"
CART_RETENTION = 60 * DAY  # the platform keeps completed checkouts this long
fromtimestamp = datetime.fromtimestamp


def _log_continue(mean: float) -> float:
    """log(q) of a geometric distribution on 0, 1, 2, ... with this mean (0 when mean is 0)."""
    return math.log(mean / (1 + mean)) if mean > 0 else 0.0


class Shop:
    """Draws orders and carts; owns the order and cart id counters of one store."""

    def __init__(self, frame: Frame, catalog: Catalog, orders_per_customer: float) -> None:
        self.frame = frame
        self.catalog = catalog
        mean = orders_per_customer
        self.buyers = min(0.9, mean)
        extra = mean / self.buyers - 1 if mean > 0 else 0.0
        # 60% casual buyers with few repeat orders, 40% loyal ones: 0.6*0.25 + 0.4*2.125 = 1
        self.casual = _log_continue(0.25 * extra)
        self.loyal = _log_continue(2.125 * extra)
        self.guest_rate = min(1.0, 0.01 * mean)
        self.next_order = 10_000_001
        self.next_cart = 30_000_001

    def order_count(self, rng: random.Random) -> int:
        if rng.random() >= self.buyers:
            return 0
        log_q = self.casual if rng.random() < 0.6 else self.loyal
        if log_q == 0.0:
            return 1
        return 1 + min(int(math.log(1.0 - rng.random()) / log_q), 499)

    def order_times(self, rng: random.Random, count: int, created: int) -> list[int]:
        """Sorted order times after signup; the first order often comes right after it."""
        first, last = created + 60, self.frame.now - 60
        if count == 0 or last <= first:
            return []
        rand, width = rng.random, last - first
        times = [first + int(rand() * width) for _ in range(count)]
        if rand() < 0.6:
            times[0] = min(created + 60 + int(rand() * 3540), last)
        times.sort()
        return times

    def quantity(self, rng: random.Random, product: Product) -> int:
        roll = rng.random()
        if product.grocery:
            return 1 if roll < 0.5 else 2 if roll < 0.8 else 3 if roll < 0.93 else 6
        return 1 if roll < 0.88 else 2 if roll < 0.97 else 3

    def order(
        self,
        rng: random.Random,
        placed: int,
        customer_id: str | None,
        email: str | None,
        favourites: tuple[int, int],
        discount_chance: float,
    ) -> tuple[Order, int, int]:
        """One order, the style bits for its export spelling, and its gross value in kuruş."""
        order_id = str(self.next_order)
        self.next_order += 1
        rand = rng.random
        roll = rand()
        count = 1 if roll < 0.6 else 2 if roll < 0.85 else 3 if roll < 0.95 else 4
        percent = 0
        if discount_chance and rand() < discount_chance:
            percent = DISCOUNT_PERCENTS[int(rand() * len(DISCOUNT_PERCENTS))]
        lines: list[OrderLine] = []
        gross = off = 0
        catalog = self.catalog
        category_cum, shelves, shelf_cums = (
            catalog.category_cum,
            catalog.products,
            catalog.product_cum,
        )
        for _ in range(count):  # the body of pick_category/pick_product/quantity, inlined for speed
            roll = rand()
            if roll < 0.65:
                category = favourites[0 if roll < 0.325 else 1]
            else:
                category = bisect(category_cum, rand() * category_cum[-1])
            cum = shelf_cums[category]
            product = shelves[category][bisect(cum, rand() * cum[-1])]
            roll = rand()
            if product.grocery:
                qty = 1 if roll < 0.5 else 2 if roll < 0.8 else 3 if roll < 0.93 else 6
            else:
                qty = 1 if roll < 0.88 else 2 if roll < 0.97 else 3
            line_gross = product.cents * qty
            line_off = line_gross * percent // 100
            gross += line_gross
            off += line_off
            lines.append(
                OrderLine(
                    product.sku,
                    product.title,
                    product.category,
                    qty,
                    product.price,
                    Decimal(line_off).scaleb(-2) if line_off else ZERO,
                )
            )
        total = gross - off
        status, refunded, updated = self.outcome(rng, placed, total)
        order = Order(  # positional for speed: external_id, customer, email, placed_at, status,
            order_id,  # currency, total, discount_total, refunded_total, updated_at, lines
            customer_id,
            email,
            fromtimestamp(placed, UTC),
            status,
            "TRY",
            Decimal(total).scaleb(-2),
            Decimal(off).scaleb(-2) if off else ZERO,
            Decimal(refunded).scaleb(-2) if refunded else ZERO,
            fromtimestamp(updated, UTC),
            tuple(lines),
        )
        return order, rng.getrandbits(8), gross

    def outcome(self, rng: random.Random, placed: int, total: int) -> tuple[OrderStatus, int, int]:
        """Status, refunded kuruş and last update: ~5% cancelled, ~3% refunded (some partly)."""
        now, rand = self.frame.now, rng.random
        roll = rand()
        if roll < 0.05:
            return OrderStatus.CANCELLED, 0, min(now, placed + 600 + int(rand() * 3 * DAY))
        if roll < 0.08:
            updated = min(now, placed + 3 * DAY + int(rand() * 27 * DAY))
            if rand() < 0.65:
                return OrderStatus.REFUNDED, total, updated
            return OrderStatus.FULFILLED, max(1, total * (10 + int(rand() * 50)) // 100), updated
        age = now - placed
        if age < DAY:
            status = OrderStatus.PENDING if rand() < 0.3 else OrderStatus.PAID
            return status, 0, min(now, placed + 60 + int(rand() * 840))
        if age < 4 * DAY:
            return OrderStatus.PAID, 0, min(now, placed + 60 + int(rand() * 3540))
        return OrderStatus.FULFILLED, 0, min(now, placed + DAY + int(rand() * 3 * DAY))

    def converted_cart(
        self, rng: random.Random, order: Order, placed: int, gross: int
    ) -> Cart | None:
        """The checkout an order came from, for recent orders (older ones are purged)."""
        if self.frame.now - placed > CART_RETENTION or rng.random() >= 0.6:
            return None
        items = tuple(
            CartItem(line.sku, line.product, line.category, line.quantity, line.unit_price)
            for line in order.lines
        )
        return self._cart(
            rng, order.customer_external_id, order.email, placed - rng.randrange(120, 5400),
            placed, True, items, gross,
        )  # fmt: skip

    def abandoned_cart(
        self,
        rng: random.Random,
        customer_id: str,
        email: str | None,
        signed_up: int,
        favourites: tuple[int, int],
    ) -> Cart:
        """An open cart left between twenty minutes and a month ago."""
        age = int(math.exp(rng.uniform(math.log(1200), math.log(30 * DAY))))
        updated = max(signed_up, self.frame.now - age)
        created = max(signed_up, updated - rng.randrange(60, 7200))
        items: list[CartItem] = []
        gross = 0
        for _ in range(1 + int(rng.random() * rng.random() * 4)):
            category = favourites[0] if rng.random() < 0.5 else self.catalog.pick_category(rng)
            product = self.catalog.pick_product(rng, category)
            qty = self.quantity(rng, product)
            gross += product.cents * qty
            items.append(CartItem(product.sku, product.title, product.category, qty, product.price))
        return self._cart(rng, customer_id, email, created, updated, False, tuple(items), gross)

    def _cart(
        self,
        rng: random.Random,
        customer_id: str | None,
        email: str | None,
        created: int,
        updated: int,
        converted: bool,
        items: tuple[CartItem, ...],
        gross: int,
    ) -> Cart:
        cart_id = str(self.next_cart)
        self.next_cart += 1
        return Cart(
            external_id=cart_id,
            customer_external_id=customer_id,
            email=email,
            currency="TRY",
            value=money(gross),
            created_at=utc(created),
            updated_at=utc(updated),
            checkout_url=f"{CHECKOUT_URL}{rng.getrandbits(96):024x}",
            converted=converted,
            items=items,
        )
