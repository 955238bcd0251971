"""The files, REST and SQL sources read one store, exported three ways, into byte-identical
profiles.

The store is the fake platform's truth (``tests/fakes/platform.py``): what a WooCommerce
shop with a cart plugin can say about its customers, orders and carts. It is exported as
the sample's export files (``crmsync.sample.export``: CSV customers with phones, e-mails
and countries spelled in the mixed ways real exports use, JSON-lines orders and carts),
served over HTTP by the fake platform, and written into the Turkish shop database
(``tests/sql_shop.py``: lines and items in tables of their own, order totals and cart
values only in them). Each source is pulled into its own state database, profiles are
built from each, and the three results must be equal to the byte.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from connectors.files import FilesSource
from connectors.rest import RestSource
from connectors.sql import SqlSource
from crmsync.config import ProfileSettings
from crmsync.contract import ConnectorContext, Source
from crmsync.records import Record, Stream
from crmsync.sample.export import ExportWriter
from crmsync.sample.item import Item
from engine.profiles import ProfileContext, iter_profiles
from engine.pull import pull_source
from state.store import Store
from state.timeutil import to_ms
from tests.fakes.platform import CARTS_PATH, FakeWooCommerce, serve_woocommerce
from tests.sql_shop import create_shop, drop_shop, shop_config, write_store

CUSTOMERS = 400
CONTEXT = ConnectorContext("shop", Path("."))


def truth(fake: FakeWooCommerce) -> list[tuple[Stream, Record]]:
    customers, orders = fake.truth()
    return [
        *((Stream.CUSTOMERS, c) for c in customers.values()),
        *((Stream.ORDERS, o) for o in orders.values()),
        *((Stream.CARTS, c) for c in fake.cart_truth().values()),
    ]


def files_source(fake: FakeWooCommerce, directory: Path) -> FilesSource:
    """The store as the platform's export files, with the sample's spellings per record."""
    writer = ExportWriter(directory)
    try:
        for stream, record in truth(fake):
            style = int(record.external_id) * 2_654_435_761 % (1 << 24)  # varied spellings
            writer.write(Item(stream, record, None, style))
    finally:
        writer.close()
    paths = {str(stream): str(path) for stream, path in writer.paths.items()}
    return FilesSource(
        {
            "kind": "files",
            "customers": {"path": paths["customers"], "updated_at": "updated_at"},
            "orders": {"path": paths["orders"], "updated_at": "updated_at", "lines": "line_items"},
            "carts": {"path": paths["carts"], "updated_at": "updated_at", "lines": "line_items"},
        },
        CONTEXT,
    )


def rest_source(fake: FakeWooCommerce) -> RestSource:
    carts: dict[str, Any] = {
        "path": CARTS_PATH,
        "pagination": {"type": "page", "total_pages_header": "X-WP-TotalPages"},
        "page_size_param": "per_page",
        "page_size": 100,
        "fields": {
            "external_id": "id",
            "customer_external_id": {"path": "customer_id", "null_if": ["0"]},
            "email": "email",
            "currency": "currency",
            "value": "total",
            "created_at": {"path": "date_created_gmt", "timezone": "UTC"},
            "updated_at": {"path": "date_modified_gmt", "timezone": "UTC"},
            "checkout_url": "checkout_url",
            "converted": {"path": "status", "map": {"converted": "true", "abandoned": "false"}},
        },
        "items": {
            "path": "items",
            "fields": {
                "sku": "sku", "product": "name", "quantity": "quantity", "unit_price": "price",
            },
        },
    }  # fmt: skip
    return RestSource(
        {
            "kind": "rest",
            "preset": "woocommerce",
            "base_url": fake.base_url,
            "auth": {"username": fake.consumer_key, "password": fake.consumer_secret},
            "streams": {"customers": {}, "orders": {}, "carts": carts},
        },
        CONTEXT,
    )


def sql_source(fake: FakeWooCommerce, url: str, schema: str | None) -> SqlSource:
    engine = sa.create_engine(url)
    tables = create_shop(engine, schema)
    write_store(engine, tables, (record for _, record in truth(fake)))
    engine.dispose()
    return SqlSource(shop_config(url, schema, page_size=97), CONTEXT)


def profiles(source: Source, state_url: str, now: datetime) -> list[bytes]:
    """Each profile as canonical JSON bytes, after a full pull into a fresh state database."""
    store = Store(state_url)
    stats = pull_source(store, "shop", source, until=now + timedelta(hours=1), lookback=timedelta())
    source.close()
    assert all(s.quarantined == 0 for s in stats.streams.values()), stats
    assert set(stats.streams) == {"customers", "orders", "carts"}
    context = ProfileContext(
        sources=("shop",),
        consent_scopes=("shop",),
        currency="TRY",
        as_of_ms=to_ms(now) or 0,
        settings=ProfileSettings(),
    )
    with store.engine.connect() as conn:
        built = [
            orjson.dumps(p, default=str, option=orjson.OPT_SORT_KEYS)
            for p in iter_profiles(conn, context)
        ]
    store.close()
    return built


@pytest.fixture
def fake() -> Iterator[FakeWooCommerce]:
    platform = FakeWooCommerce(customers=CUSTOMERS, orders_per_customer=2.0, carts=True)
    with serve_woocommerce(platform):
        yield platform


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str | None, list[str]]]:
    """Where the shop database and the three state databases live: all on one engine."""
    if request.param == "sqlite":
        states = [f"sqlite:///{tmp_path / f'{name}.db'}" for name in ("files", "rest", "sql")]
        yield f"sqlite:///{tmp_path / 'shop.db'}", None, states
        return
    base = request.getfixturevalue("postgres_url")
    shop_schema = f"magaza_{uuid.uuid4().hex[:8]}"
    names = [f"durum_{name}_{uuid.uuid4().hex[:8]}" for name in ("files", "rest", "sql")]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'create schema "{name}"'))
    prefix = base.rsplit("%3D", 1)[0]
    try:
        yield base, shop_schema, [f"{prefix}%3D{name}" for name in names]
    finally:
        drop_shop(admin, shop_schema)
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'drop schema if exists "{name}" cascade'))
        admin.dispose()


def test_files_rest_and_sql_sources_build_byte_identical_profiles(
    fake: FakeWooCommerce, engine: tuple[str, str | None, list[str]], tmp_path: Path
) -> None:
    shop_url, shop_schema, (files_state, rest_state, sql_state) = engine
    now = fake.now()
    from_files = profiles(files_source(fake, tmp_path / "export"), files_state, now)
    from_rest = profiles(rest_source(fake), rest_state, now)
    from_sql = profiles(sql_source(fake, shop_url, shop_schema), sql_state, now)
    assert len(from_files) > CUSTOMERS * 0.9  # every person, guests included
    assert sum(b'"orders_count":0' not in p for p in from_files) > CUSTOMERS / 2
    assert from_rest == from_files
    assert from_sql == from_files
