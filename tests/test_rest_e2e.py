"""End to end: 50,000 customers and their orders pulled incrementally, over many runs, from
a fake WooCommerce store that keeps changing and misbehaving, into staging; at the end the
staging tables equal the store's data exactly."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.rest import RestSource
from crmsync.contract import ConnectorContext
from crmsync.records import Customer, Order
from engine.pull import pull_source
from state import schema
from state.store import Store
from tests.fakes.platform import Churn, FakeWooCommerce, Faults, serve_woocommerce

CUSTOMERS = 50_000
RUNS = 4  # incremental runs while the store changes, then one run once it is quiet
LOOKBACK = timedelta(minutes=2)


def _ms(moment: Any) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _minor(amount: Decimal) -> int:
    return int(amount * 100)


def expected_customer(c: Customer) -> tuple[Any, ...]:
    return (
        c.external_id, c.email, c.phone, c.first_name, c.last_name, c.city, c.region,
        c.country, c.postal_code, c.address1, _ms(c.created_at), _ms(c.updated_at),
    )  # fmt: skip


def expected_order(o: Order) -> tuple[Any, ...]:
    return (
        o.external_id, o.customer_external_id, o.email, _ms(o.placed_at), _ms(o.updated_at),
        o.status.value, o.currency, _minor(o.total), _minor(o.discount_total),
        _minor(o.refunded_total),
    )  # fmt: skip


def expected_lines(o: Order) -> list[tuple[Any, ...]]:
    return [
        (o.external_id, n, line.sku, line.product, line.quantity, _minor(line.unit_price),
         _minor(line.discount))
        for n, line in enumerate(o.lines, start=1)
    ]  # fmt: skip


def staged(store: Store) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    c, o, ln = schema.customers.c, schema.orders.c, schema.order_lines.c
    with store.transaction() as conn:
        customers = conn.execute(
            select(
                c.external_id, c.email, c.phone, c.first_name, c.last_name, c.city, c.region,
                c.country, c.postal_code, c.address1, c.created_at, c.updated_at,
            ).where(c.source == "shop")
        )  # fmt: skip
        orders = conn.execute(
            select(
                o.external_id, o.customer_external_id, o.email, o.placed_at, o.updated_at,
                o.status, o.currency, o.total_minor, o.discount_minor, o.refunded_minor,
            ).where(o.source == "shop")
        )  # fmt: skip
        lines = conn.execute(
            select(
                ln.order_external_id, ln.line_no, ln.sku, ln.product, ln.quantity,
                ln.unit_price_minor, ln.discount_minor,
            ).where(ln.source == "shop")
        )  # fmt: skip
        return (
            {tuple(r) for r in customers},
            {tuple(r) for r in orders},
            {tuple(r) for r in lines},
        )


@pytest.mark.slow
def test_incremental_pulls_under_churn_and_faults_end_equal_to_the_store(tmp_path: Path) -> None:
    faults = Faults(
        rate_429=0.02,
        retry_after="0",
        rate_500=0.02,
        rate_timeout=0.004,
        timeout_sleep=0.8,
        rate_slow=0.02,
        slow_sleep=0.02,
        rate_duplicate=0.05,
    )
    fake = FakeWooCommerce(
        customers=CUSTOMERS,
        orders_per_customer=1.0,
        max_per_page=500,
        faults=faults,
        churn=Churn(every_pages=5, changes=25),
    )
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    config = {
        "kind": "rest",
        "preset": "woocommerce",
        "base_url": "",
        "auth": {"username": fake.consumer_key, "password": fake.consumer_secret},
        "http": {
            "timeout": 0.4,
            "retry": {"attempts": 10, "backoff_initial": 0.01, "backoff_max": 0.05},
        },
        "streams": {"customers": {"page_size": 500}, "orders": {"page_size": 500}},
    }
    with serve_woocommerce(fake):
        source = RestSource(
            {**config, "base_url": fake.base_url}, ConnectorContext("shop", tmp_path)
        )
        try:
            received = []
            for run in range(RUNS + 1):
                if run == RUNS:  # the store goes quiet: the last run must catch everything
                    fake.churn.every_pages = 0
                    fake.faults = Faults()
                else:
                    fake.change(300)
                fake.tick(30)
                stats = pull_source(store, "shop", source, until=fake.now(), lookback=LOOKBACK)
                received.append(sum(s.received for s in stats.streams.values()))
        finally:
            source.close()
    truth_customers, truth_orders = fake.truth()
    customers, orders, lines = staged(store)
    store.close()

    assert len(truth_customers) > CUSTOMERS * 0.95
    assert customers == {expected_customer(c) for c in truth_customers.values()}
    assert orders == {expected_order(o) for o in truth_orders.values()}
    assert lines == {row for o in truth_orders.values() for row in expected_lines(o)}
    # it was incremental: later runs received a small part of the store
    assert received[0] >= len(truth_customers) * 0.9
    assert max(received[1:]) < received[0] / 5
    # and it was hard: every fault happened, and the store changed under the pulls
    for kind in ("429", "500", "timeout", "slow", "duplicate", "churn"):
        assert fake.injected[kind] > 0, kind
