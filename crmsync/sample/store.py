"""The sample store generator: one pass over customers, each followed by its orders and carts.

A single seeded ``random.Random`` drives the clean store, so the same spec gives the same
records; dirty rows come from their own stream (see ``dirty``). Nothing is kept between
customers but counters, so memory stays flat for a million customers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from crmsync.records import Order, Record, Stream
from crmsync.sample.catalog import Catalog, build_catalog
from crmsync.sample.dirty import DirtyMaker
from crmsync.sample.export import ExportWriter
from crmsync.sample.item import Item
from crmsync.sample.orders import Shop
from crmsync.sample.people import DOMAINS, fold, make_person
from crmsync.sample.spec import Frame, SampleSpec
from crmsync.sample.vocab import FEMALE_NAMES, LAST_NAMES, MALE_NAMES

FIRST_CUSTOMER_ID = 100_001


def items(spec: SampleSpec) -> Iterator[Item]:
    """Every row of the store in export order, clean and dirty, with its canonical record."""
    frame = Frame.of(spec)
    catalog = build_catalog(spec.seed)
    shop = Shop(frame, catalog, spec.orders_per_customer)
    rng = random.Random(spec.seed)
    dirty = DirtyMaker(spec, frame) if spec.dirty_rate > 0 else None
    total = spec.customers
    span = frame.now - 3600 - frame.start
    guests = 0
    for index in range(total):
        created = frame.start + int(span * (index + rng.random()) / total)
        times = shop.order_times(rng, shop.order_count(rng), created)
        customer, style = make_person(
            rng, frame, number=index + 1, external_id=str(FIRST_CUSTOMER_ID + index),
            created=created, last_activity=times[-1] if times else created, seed=spec.seed,
        )  # fmt: skip
        yield Item(Stream.CUSTOMERS, customer, None, style)
        favourites = (catalog.pick_category(rng), catalog.pick_category(rng))
        roll = rng.random()
        discount_chance = 1.0 if roll < 0.1 else 0.2 if roll < 0.65 else 0.0
        last_order: Order | None = None
        for placed in times:
            last_order, order_style, gross = shop.order(
                rng, placed, customer.external_id, customer.email, favourites, discount_chance
            )
            yield Item(Stream.ORDERS, last_order, None, order_style)
            cart = shop.converted_cart(rng, last_order, placed, gross)
            if cart is not None:
                yield Item(Stream.CARTS, cart, None, 0)
        if not customer.deleted and rng.random() < 0.2:
            cart = shop.abandoned_cart(
                rng, customer.external_id, customer.email, created, favourites
            )
            yield Item(Stream.CARTS, cart, None, 0)
        if rng.random() < shop.guest_rate:
            guests += 1
            yield _guest_order(rng, shop, catalog, frame, guests)
        if dirty is not None:
            yield from dirty.after(customer, last_order)


def _guest_order(
    rng: random.Random, shop: Shop, catalog: Catalog, frame: Frame, number: int
) -> Item:
    """A checkout without an account: the order carries only an e-mail address."""
    names = FEMALE_NAMES if rng.random() < 0.52 else MALE_NAMES
    first, last = (
        fold(names[rng.randrange(len(names))]),
        fold(LAST_NAMES[rng.randrange(len(LAST_NAMES))]),
    )
    email = f"{first}.{last}.misafir{number}@{DOMAINS[rng.randrange(len(DOMAINS))]}"
    favourites = (catalog.pick_category(rng), catalog.pick_category(rng))
    placed = rng.randrange(frame.start, frame.now - 60)
    order, style, _ = shop.order(rng, placed, None, email, favourites, 0.2)
    return Item(Stream.ORDERS, order, None, style)


def iter_store(spec: SampleSpec) -> Iterator[Record]:
    """The store's clean canonical records, streamed; each order and cart follows its customer.

    Dirty rows that a source would quarantine are left out; those it would repair appear
    as repaired, so this equals what the files source reads from ``write_files`` output.
    """
    for item in items(spec):
        if item.record is not None:
            yield item.record


def write_files(spec: SampleSpec, out_dir: Path) -> dict[str, Path]:
    """Writes customers.csv, orders.jsonl and carts.jsonl in the platform's export format.

    Dirty rows are included. Returns stream name -> path. Same spec, same bytes.
    """
    writer = ExportWriter(Path(out_dir))
    try:
        for item in items(spec):
            writer.write(item)
    finally:
        writer.close()
    return {str(stream): path for stream, path in writer.paths.items()}
