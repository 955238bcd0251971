"""The WooCommerce preset against the fake store over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.rest import RestSource
from crmsync.contract import ConnectorContext
from crmsync.errors import ConfigError
from crmsync.records import Customer, Order, RecordIssue, Stream
from tests.fakes.platform import Churn, FakeWooCommerce, Faults, serve_woocommerce

CONTEXT = ConnectorContext("shop", Path("."))


@pytest.fixture
def shop() -> Iterator[FakeWooCommerce]:
    with serve_woocommerce(FakeWooCommerce(customers=300, orders_per_customer=1.5)) as store:
        yield store


def woo_source(store: FakeWooCommerce, **overrides: Any) -> RestSource:
    config = {
        "kind": "rest",
        "preset": "woocommerce",
        "base_url": store.base_url,
        "auth": {"username": store.consumer_key, "password": store.consumer_secret},
        "http": {
            "timeout": 0.25,
            "retry": {"attempts": 8, "backoff_initial": 0.01, "backoff_max": 0.02},
        },
        **overrides,
    }
    return RestSource(config, CONTEXT)


def pull(
    source: RestSource, until: datetime, since: datetime | None = None
) -> tuple[dict[str, Customer], dict[str, Order]]:
    """What staging does: keep the newest version of each record."""
    customers: dict[str, Customer] = {}
    orders: dict[str, Order] = {}
    for stream, into in ((Stream.CUSTOMERS, customers), (Stream.ORDERS, orders)):
        for item in source.read(stream, since, until):
            assert not isinstance(item, RecordIssue), item
            known = into.get(item.external_id)
            if known is None or (known.updated_at or until) <= (item.updated_at or until):
                into[item.external_id] = item  # type: ignore[assignment]
    return customers, orders


def test_a_full_read_equals_the_store_exactly(shop: FakeWooCommerce) -> None:
    customers, orders = pull(woo_source(shop), shop.now())
    assert (customers, orders) == shop.truth()
    assert len(orders) > len(customers) > 250
    assert any(o.lines and o.lines[0].discount for o in orders.values())


def test_orders_are_asked_for_changes_since_in_gmt_and_customers_filtered_locally(
    shop: FakeWooCommerce,
) -> None:
    source = woo_source(shop)
    first_until = shop.now()
    pull(source, first_until)
    shop.tick(60)
    shop.change(30)
    shop.requests.clear()
    since = first_until - timedelta(seconds=1)
    customers, orders = pull(source, shop.now(), since)
    truth_customers, truth_orders = shop.truth()
    changed_customers = {
        k for k, c in truth_customers.items() if c.updated_at and c.updated_at > since
    }
    changed_orders = {k for k, o in truth_orders.items() if o.updated_at and o.updated_at > since}
    assert set(customers) == changed_customers and changed_customers
    assert set(orders) == changed_orders and changed_orders
    order_requests = [r for r in shop.requests if "/orders" in r]
    assert order_requests and all(
        f"modified_after={since:%Y-%m-%dT%H%%3A%M%%3A%S}" in r and "dates_are_gmt=true" in r
        for r in order_requests
    )


def test_faults_are_survived_and_the_result_is_still_exact() -> None:
    faults = Faults(script=["429", "500", "timeout", "slow", "duplicate", "", "duplicate"])
    faults.retry_after = "0"
    faults.timeout_sleep = 0.6
    store = FakeWooCommerce(customers=300, faults=faults)
    with serve_woocommerce(store):
        customers, orders = pull(
            woo_source(store, streams={"customers": {"page_size": 50}}), store.now()
        )
    assert (customers, orders) == store.truth()
    assert {k: store.injected[k] for k in ("429", "500", "timeout", "slow", "duplicate")} == {
        "429": 1,
        "500": 1,
        "timeout": 1,
        "slow": 1,
        "duplicate": 2,
    }


def test_records_changed_during_the_read_wait_for_the_next_run() -> None:
    store = FakeWooCommerce(customers=400, churn=Churn(every_pages=2, changes=10))
    with serve_woocommerce(store):
        source = woo_source(
            store, streams={"customers": {"page_size": 40}, "orders": {"page_size": 40}}
        )
        until = store.now()
        customers, orders = pull(source, until)
        assert store.injected["churn"] > 0
        assert all(c.updated_at and c.updated_at <= until for c in customers.values())
        assert customers != store.truth()[0]  # the store moved on meanwhile
        store.churn.every_pages = 0
        later_customers, later_orders = pull(source, store.now(), until - timedelta(seconds=1))
    customers.update(later_customers)
    orders.update(later_orders)
    assert (customers, orders) == store.truth()


def test_wrong_keys_fail_the_check_with_a_credentials_message(shop: FakeWooCommerce) -> None:
    source = woo_source(shop, auth={"username": "ck_wrong_000000", "password": "cs_wrong_000000"})
    results = source.check()
    assert [r.ok for r in results] == [False, False]
    assert all("check the API key/credentials" in r.detail for r in results)


def test_the_check_passes_with_the_right_keys(shop: FakeWooCommerce) -> None:
    assert all(r.ok for r in woo_source(shop).check())


def test_a_page_size_above_the_platform_cap_is_a_config_error(shop: FakeWooCommerce) -> None:
    source = woo_source(shop, streams={"customers": {"page_size": 500}})
    with pytest.raises(ConfigError, match="HTTP 400"):
        list(source.read(Stream.CUSTOMERS, None, shop.now()))
