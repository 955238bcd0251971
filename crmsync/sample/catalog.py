"""The sample store's product catalogue, built once per seed from the word lists.

Products carry their price both in kuruş (for arithmetic) and as a Decimal (for records),
so the order loop does no conversions. Cheap products are picked more often than dear
ones, as in a real shop.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate

from crmsync.sample.spec import money
from crmsync.sample.vocab import CATEGORIES, COLOURS


@dataclass(frozen=True, slots=True)
class Product:
    sku: str
    title: str
    category: str
    cents: int
    price: Decimal
    grocery: bool  # bought by the handful rather than one at a time


@dataclass(frozen=True, slots=True)
class Catalog:
    names: tuple[str, ...]
    category_cum: tuple[float, ...]
    products: tuple[tuple[Product, ...], ...]  # per category
    product_cum: tuple[tuple[float, ...], ...]

    def pick_category(self, rng: random.Random) -> int:
        return bisect(self.category_cum, rng.random() * self.category_cum[-1])

    def pick_product(self, rng: random.Random, category: int) -> Product:
        cum = self.product_cum[category]
        return self.products[category][bisect(cum, rng.random() * cum[-1])]


def shelf_price(rng: random.Random, low: int, high: int) -> int:
    """A price in kuruş between ``low`` and ``high`` lira that ends the way shops like (x9,90)."""
    lira = math.exp(rng.uniform(math.log(low), math.log(high)))
    if lira >= 1000:
        whole = max(round(lira / 50) * 50 - 1, 1)
    elif lira >= 100:
        whole = max(round(lira / 10) * 10 - 1, 1)
    else:
        whole = max(round(lira) - 1, 1)
    return whole * 100 + (99 if rng.random() < 0.3 else 90)


def build_catalog(seed: int) -> Catalog:
    rng = random.Random(seed * 7919 + 1)
    names: list[str] = []
    weights: list[float] = []
    shelves: list[tuple[Product, ...]] = []
    cums: list[tuple[float, ...]] = []
    for name, prefix, weight, coloured, bases in CATEGORIES:
        products: list[Product] = []
        for low, title, high in ((lo, t, hi) for t, lo, hi in bases):
            cents = shelf_price(rng, low, high)
            variants = rng.sample(COLOURS, 3) if coloured else [""]
            for colour in variants:
                full = f"{title} {colour}" if colour else title
                sku = f"{prefix}-{len(products) + 1:04d}"
                products.append(
                    Product(sku, full, name, cents, money(cents), name == "Süpermarket")
                )
        names.append(name)
        weights.append(weight)
        shelves.append(tuple(products))
        cums.append(tuple(accumulate(1 / math.sqrt(p.cents) for p in products)))
    return Catalog(tuple(names), tuple(accumulate(weights)), tuple(shelves), tuple(cums))
