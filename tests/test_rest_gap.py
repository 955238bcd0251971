"""No gap, whatever the paging (issue 9, item 3).

An API that pages by position (offset, page number) in update-time order moves a record
changed during a read to the end of its listing, which pushes an unchanged record back
onto a page already read. That record's update time is older than the cursor the read
sets, so no later incremental run reads it. These tests page through a fake platform
that changes under the read and check that staging ends equal to the platform exactly,
that the re-read which prevents the gap is bounded and leaves the cursor alone when it
gives up, and that orders which cannot lose a record are not re-read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from connectors.rest import RestConfig, RestSource
from connectors.rest.woocommerce import WOOCOMMERCE
from crmsync.contract import ConnectorContext
from crmsync.errors import ConnectorError
from crmsync.records import Cart
from engine.pull import PullStats, pull_source
from state import schema
from state.store import Store
from tests.fakes.platform import API, CARTS_PATH, Churn, FakeWooCommerce, serve_woocommerce
from tests.test_rest_e2e import expected_customer, expected_lines, expected_order, staged

# Shorter than the spread of the changes, so a skipped record is never saved by chance
# by the next run's lookback window: only the re-read can save it.
LOOKBACK = timedelta(seconds=1)
PAGE = 20
PATHS = {"customers": f"{API}/customers", "orders": f"{API}/orders", "carts": CARTS_PATH}
STREAMS = tuple(PATHS)

CART_FIELDS: dict[str, Any] = {
    "external_id": "id",
    "customer_external_id": {"path": "customer_id", "null_if": ["0"]},
    "email": "email",
    "currency": "currency",
    "value": "total",
    "created_at": {"path": "date_created_gmt", "timezone": "UTC"},
    "updated_at": {"path": "date_modified_gmt", "timezone": "UTC"},
    "checkout_url": "checkout_url",
    "converted": {"path": "status", "map": {"converted": "true", "abandoned": "false"}},
}
CART_ITEMS: dict[str, Any] = {
    "path": "items",
    "fields": {"sku": "sku", "product": "name", "quantity": "quantity", "unit_price": "price"},
}


def platform_config(
    fake: FakeWooCommerce,
    *,
    pagination: dict[str, Any] | None = None,
    direction: str = "asc",
    **stream_keys: Any,
) -> dict[str, Any]:
    """All three streams of the fake, listed by modification time (``orderby=modified``)."""
    woo = WOOCOMMERCE["streams"]
    common = {
        "pagination": pagination or {"type": "offset"},
        "page_size_param": "per_page",
        "page_size": PAGE,
        "params": {"orderby": "modified", "order": direction, "dates_are_gmt": "true"},
        "incremental_param": "modified_after",
        "incremental_format": "strftime",
        **stream_keys,
    }
    return {
        "kind": "rest",
        "base_url": fake.base_url,
        "auth": {"type": "basic", "username": fake.consumer_key, "password": fake.consumer_secret},
        "http": {"timeout": 2.0, "retry": {"attempts": 3, "backoff_initial": 0.01}},
        "streams": {
            "customers": {
                **common,
                "path": PATHS["customers"],
                "fields": woo["customers"]["fields"],
            },
            "orders": {
                **common,
                "path": PATHS["orders"],
                "fields": woo["orders"]["fields"],
                "lines": woo["orders"]["lines"],
            },
            "carts": {**common, "path": CARTS_PATH, "fields": CART_FIELDS, "items": CART_ITEMS},
        },
    }


@pytest.fixture
def fake() -> Iterator[FakeWooCommerce]:
    platform = FakeWooCommerce(
        customers=300, orders_per_customer=1.0, carts=True, customers_modified_after=True
    )
    with serve_woocommerce(platform):
        yield platform


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    state = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.close()


def source_for(config: dict[str, Any]) -> RestSource:
    return RestSource(config, ConnectorContext("shop", Path(".")))


def pull(store: Store, source: RestSource, fake: FakeWooCommerce) -> PullStats:
    """One pipeline run's pull, started half a minute after the platform's last change."""
    fake.tick(30)
    return pull_source(store, "shop", source, until=fake.now(), lookback=LOOKBACK)


def passes(fake: FakeWooCommerce, stream: str) -> int:
    """How many times the stream's listing was read from its first page."""
    count = 0
    for request in fake.requests:
        parts = urlsplit(request)
        query = parse_qs(parts.query)
        first = query.get("offset", ["0"]) == ["0"] and query.get("page", ["1"]) == ["1"]
        count += parts.path == PATHS[stream] and first
    return count


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def expected_cart(c: Cart) -> tuple[Any, ...]:
    items = tuple((i.sku, i.product, i.quantity, i.unit_price) for i in c.items)
    return (
        c.external_id, c.customer_external_id, c.email, c.currency, int(c.value * 100),
        c.checkout_url, c.converted, _ms(c.created_at), _ms(c.updated_at), items,
    )  # fmt: skip


def staged_carts(store: Store) -> set[tuple[Any, ...]]:
    c = schema.carts.c
    with store.transaction() as conn:
        rows = conn.execute(
            select(
                c.external_id, c.customer_external_id, c.email, c.currency, c.value_minor,
                c.checkout_url, c.converted, c.created_at, c.updated_at, c["items"],
            ).where(c.source == "shop")
        ).all()  # fmt: skip
    return {
        (
            *row[:9],
            tuple(
                (i["sku"], i["product"], i["quantity"], Decimal(i["unit_price"]))
                for i in orjson.loads(row[9])
            ),
        )
        for row in rows
    }


def assert_staged_equals_the_platform(store: Store, fake: FakeWooCommerce) -> None:
    truth_customers, truth_orders = fake.truth()
    customers, orders, lines = staged(store)
    assert customers == {expected_customer(c) for c in truth_customers.values()}
    assert orders == {expected_order(o) for o in truth_orders.values()}
    assert lines == {row for o in truth_orders.values() for row in expected_lines(o)}
    assert staged_carts(store) == {expected_cart(c) for c in fake.cart_truth().values()}


# --- the gap, closed -------------------------------------------------------------------


@pytest.mark.parametrize("paging", ["offset", "page"])
@pytest.mark.parametrize("incremental", [False, True], ids=["first-run", "incremental-run"])
def test_records_changed_while_paging_in_update_time_order_leave_no_gap(
    fake: FakeWooCommerce, store: Store, paging: str, incremental: bool
) -> None:
    source = source_for(platform_config(fake, pagination={"type": paging}))
    try:
        if incremental:
            pull(store, source, fake)  # a quiet first run, then changes to read incrementally
            for stream in STREAMS:
                fake.touch(stream, 50)
        # while each listing is read, records it has already served are updated: in an
        # update-time order each goes to the end and pushes an unread record back
        fake.churn = Churn(every_pages=2, changes=3, mode="behind", bursts=2)
        pull(store, source, fake)
        fake.churn = Churn()
        pull(store, source, fake)  # the next incremental run takes the records changed
    finally:
        source.close()
    assert_staged_equals_the_platform(store, fake)
    assert all(fake.injected[f"churn:{stream}"] > 0 for stream in STREAMS)
    runs = 3 if incremental else 2
    assert all(passes(fake, stream) > runs for stream in STREAMS)  # the churned run re-read


def test_a_re_read_is_bounded_and_giving_up_leaves_the_cursor_where_it_was(
    fake: FakeWooCommerce, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    source = source_for(platform_config(fake))
    try:
        pull(store, source, fake)
        cursor = store.cursor("shop", "customers")
        fake.touch("customers", 60)
        fake.churn = Churn(every_pages=1, changes=2, mode="behind")  # moves on every page
        fake.requests.clear()
        with (
            caplog.at_level(logging.WARNING),
            pytest.raises(ConnectorError, match="kept moving") as failure,
        ):
            pull(store, source, fake)
        assert store.cursor("shop", "customers") == cursor
        assert passes(fake, "customers") == 4  # the first read and three re-reads
        rereads = [r for r in caplog.records if "reading it again" in r.getMessage()]
        assert len(rereads) == 3
        message = str(failure.value)
        assert "customers" in message and "cursor" in message
        assert "sources.shop.streams.customers.order" in message  # what to do, where
        fake.churn = Churn()  # the platform calms down: the next run gets everything
        pull(store, source, fake)
    finally:
        source.close()
    assert_staged_equals_the_platform(store, fake)


def test_max_rereads_sets_the_bound(fake: FakeWooCommerce, store: Store) -> None:
    source = source_for(platform_config(fake, max_rereads=1))
    fake.churn = Churn(every_pages=1, changes=2, mode="behind")
    try:
        with pytest.raises(ConnectorError, match="kept moving"):
            pull(store, source, fake)
    finally:
        source.close()
    assert passes(fake, "customers") == 2
    assert store.cursor("shop", "customers") is None


# --- which orders need a re-read -------------------------------------------------------


@pytest.mark.parametrize(("declared", "reads"), [(True, 1), (False, 2)])
def test_new_records_alone_need_no_re_read_once_the_order_and_total_are_declared(
    fake: FakeWooCommerce, store: Store, declared: bool, reads: int
) -> None:
    """New records go to the end of an ascending update-time listing and move nothing;
    with the order and the total declared, a total grown by exactly the new records met
    proves it. Without them, any record newer than the run is taken as a move."""
    keys: dict[str, Any] = {"pagination": {"type": "offset"}}
    if declared:
        keys = {
            "order": "updated_at",
            "pagination": {"type": "offset", "total_header": "X-WP-Total"},
        }
    source = source_for(platform_config(fake, **keys))
    fake.churn = Churn(every_pages=3, changes=2, mode="insert", bursts=2)
    try:
        pull(store, source, fake)
        assert passes(fake, "customers") == reads
        fake.churn = Churn()
        pull(store, source, fake)
    finally:
        source.close()
    assert fake.injected["churn:customers"] == 2
    assert_staged_equals_the_platform(store, fake)


def test_a_descending_update_time_order_moves_changes_behind_the_read_and_needs_no_re_read(
    fake: FakeWooCommerce, store: Store
) -> None:
    source = source_for(
        platform_config(fake, direction="desc", order="updated_at_desc", max_rereads=0)
    )
    fake.churn = Churn(every_pages=2, changes=3, mode="behind", bursts=2)
    try:
        pull(store, source, fake)
        assert all(passes(fake, stream) == 1 for stream in STREAMS)
        fake.churn = Churn()
        pull(store, source, fake)
    finally:
        source.close()
    assert_staged_equals_the_platform(store, fake)


def test_a_hard_delete_shifts_any_order_and_a_declared_total_catches_it(
    fake: FakeWooCommerce, store: Store
) -> None:
    pagination = {"type": "offset", "total_header": "X-WP-Total"}
    source = source_for(
        platform_config(fake, direction="desc", order="updated_at_desc", pagination=pagination)
    )
    fake.churn = Churn(every_pages=2, changes=2, mode="delete", bursts=2)
    try:
        pull(store, source, fake)
    finally:
        source.close()
    assert passes(fake, "customers") == 2
    customers, orders, _ = staged(store)
    truth_customers, truth_orders = fake.truth()
    # deleted records stay staged (a hard delete is not a change a read can see), but
    # every record still on the platform was read
    assert {expected_customer(c) for c in truth_customers.values()} <= customers
    assert {expected_order(o) for o in truth_orders.values()} <= orders
    assert {expected_cart(c) for c in fake.cart_truth().values()} <= staged_carts(store)


def test_position_links_are_watched_once_the_update_time_order_is_declared(
    fake: FakeWooCommerce, store: Store
) -> None:
    """The fake's Link header, like WooCommerce's, carries a page number: position-based
    paging behind a link, which only the declared order tells apart from a stable cursor."""
    config = platform_config(fake, pagination={"type": "link_header"}, order="updated_at")
    source = source_for(config)
    fake.churn = Churn(every_pages=2, changes=3, mode="behind", bursts=2)
    try:
        pull(store, source, fake)
        fake.churn = Churn()
        pull(store, source, fake)
    finally:
        source.close()
    assert passes(fake, "customers") >= 3  # two reads in the first run, one in the second
    assert_staged_equals_the_platform(store, fake)


def test_the_woocommerce_preset_lists_by_id_so_changes_never_force_a_re_read(
    store: Store,
) -> None:
    """By id, an update keeps its place and a new record takes the next id at the end, so
    nothing can slide onto a page already read: the preset is read once, as before."""
    fake = FakeWooCommerce(customers=300, orders_per_customer=1.0)
    fake.churn = Churn(every_pages=2, changes=3, mode="behind", bursts=2)
    with serve_woocommerce(fake):
        config = {
            "kind": "rest",
            "preset": "woocommerce",
            "base_url": fake.base_url,
            "auth": {"username": fake.consumer_key, "password": fake.consumer_secret},
            "streams": {"customers": {"page_size": PAGE}, "orders": {"page_size": PAGE}},
        }
        source = source_for(config)
        try:
            pull(store, source, fake)
            assert passes(fake, "customers") == passes(fake, "orders") == 1
            fake.churn = Churn()
            pull(store, source, fake)
        finally:
            source.close()
    truth_customers, truth_orders = fake.truth()
    customers, orders, _ = staged(store)
    assert customers == {expected_customer(c) for c in truth_customers.values()}
    assert orders == {expected_order(o) for o in truth_orders.values()}


# --- configuration ---------------------------------------------------------------------


def _rest(streams: dict[str, Any], preset: str | None = None) -> RestConfig:
    data: dict[str, Any] = {"kind": "rest", "base_url": "https://shop.test", "streams": streams}
    if preset:
        data["preset"] = preset
        data["auth"] = {"username": "ck", "password": "cs"}
    return RestConfig(**data)


def test_the_order_is_unknown_unless_declared_and_the_preset_declares_id() -> None:
    stream = {"path": "/c", "fields": {"external_id": "id"}}
    assert _rest({"customers": stream}).streams["customers"].order == "unknown"
    preset = _rest({}, preset="woocommerce")
    assert {s.order for s in preset.streams.values()} == {"id"}
    assert preset.streams["orders"].max_rereads == 3


def test_an_unknown_order_is_a_config_error_naming_the_key() -> None:
    stream = {"path": "/c", "fields": {"external_id": "id"}, "order": "newest"}
    with pytest.raises(ValidationError, match=r"streams\.customers\.order"):
        _rest({"customers": stream})
