"""Profiles: identity merging and every metric, on both state engines."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from connectors.base import ConsentUpdate
from crmsync.config import ProfileSettings
from crmsync.profiles import ProfileContext, iter_profiles
from crmsync.records import Channel, Consent, ConsentState, OrderStatus, Stream
from state.ledger import add_consent_events
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, cart, customer, days_ago, order


def build(store: Store, sources: tuple[str, ...] = ("shop",), scopes: tuple[str, ...] = ()
          ) -> dict[str, dict[str, Any]]:
    ctx = ProfileContext(sources=sources, consent_scopes=sources + scopes, currency="TRY",
                         as_of_ms=to_ms(NOW) or 0, settings=ProfileSettings())
    with store.engine.connect() as conn:
        return {p["person_key"]: p for p in iter_profiles(conn, ctx)}


@pytest.fixture
def store(state_url: str) -> Store:
    return Store(state_url)


def test_spend_counts_and_windows_leave_out_cancelled_and_refunded(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "ayse@example.com")])
    store.stage("shop", Stream.ORDERS, [
        order("o1", "1", "100.50", 10, discount="10"),
        order("o2", "1", "200", 60, refunded="50"),
        order("o3", "1", "1000", 5, status=OrderStatus.CANCELLED),
        order("o4", "1", "300", 200, status=OrderStatus.REFUNDED),
        order("o5", "1", "400", 300, categories=("Elektronik", "Kitap")),
        order("o6", "1", "999", -1),  # placed after the as-of time: not yet
    ])
    p = build(store)["e:ayse@example.com"]
    assert p["orders_count"] == 3
    assert p["cancelled_orders"] == 2
    assert p["total_spent"] == Decimal("650.50")
    assert p["spent_30d"] == Decimal("100.50") and p["orders_30d"] == 1
    assert p["spent_90d"] == Decimal("250.50") and p["orders_90d"] == 2
    assert p["spent_365d"] == Decimal("650.50") and p["orders_365d"] == 3
    assert p["discounted_orders"] == 1 and p["full_price_orders"] == 2
    assert p["avg_order_value"] == Decimal("216.83")
    assert p["first_order_at"] == days_ago(300) and p["last_order_at"] == days_ago(10)
    assert p["days_since_last_order"] == 10
    assert p["categories"] == ("Elektronik", "Kitap")
    assert p["top_category"] == "Kitap"
    assert (p["rfm_recency"], p["rfm_frequency"], p["rfm_monetary"]) == (5, 3, 2)
    assert p["rfm_label"] == "potential"
    assert p["lifecycle_stage"] == "active"


def test_people_merge_by_email_then_phone_and_guest_orders_join_by_email(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "can@example.com", phone="+905321112233")])
    store.stage("pos", Stream.CUSTOMERS, [
        customer("A", None, phone="+905321112233", first_name="Can", city=None, updated_at=NOW),
        customer("B", "can@example.com", city="Ankara", updated_at=days_ago(1)),
    ])
    store.stage("pos", Stream.ORDERS, [order("p1", "A", "50", 3)])
    store.stage("shop", Stream.ORDERS, [order("g1", None, "70", 2, email="can@example.com")])
    profiles = build(store, ("shop", "pos"))
    assert list(profiles) == ["e:can@example.com"]
    p = profiles["e:can@example.com"]
    assert p["orders_count"] == 2 and p["total_spent"] == Decimal("120.00")
    assert p["first_name"] == "Can"  # from the most recently updated record
    assert p["city"] == "Ankara"
    assert p["sources"] == ("pos", "shop")


def test_phone_links_only_within_the_pipelines_sources(store: Store) -> None:
    store.stage("other_store", Stream.CUSTOMERS, [customer("1", "x@example.com", phone="+905321112233")])
    store.stage("shop", Stream.CUSTOMERS, [customer("2", None, phone="+905321112233")])
    assert list(build(store)) == ["p:+905321112233"]


def test_open_cart_is_abandoned_after_the_threshold_unless_an_order_followed(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [
        customer("1", "a@example.com"), customer("2", "b@example.com"),
        customer("3", "c@example.com"),
    ])
    store.stage("shop", Stream.CARTS, [
        cart("k1", "1", "250", hours_ago=30),
        cart("k2", "2", "90", hours_ago=1),
        cart("k3", "3", "80", hours_ago=48),
    ])
    store.stage("shop", Stream.ORDERS, [order("o3", "3", "80", 1)])
    p = build(store)
    assert p["e:a@example.com"]["cart_abandoned"] is True
    assert p["e:a@example.com"]["cart_value"] == Decimal("250.00")
    assert p["e:a@example.com"]["cart_url"] == "https://shop.example.com/checkout/k1"
    assert p["e:b@example.com"]["cart_open"] is True
    assert p["e:b@example.com"]["cart_abandoned"] is False
    assert p["e:c@example.com"]["cart_open"] is False


def test_latest_consent_wins_and_an_opt_out_read_back_beats_an_older_opt_in(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [
        customer("1", "a@example.com", email_consent=Consent(ConsentState.SUBSCRIBED, days_ago(30))),
        customer("2", "b@example.com", email_consent=Consent(ConsentState.SUBSCRIBED, days_ago(30))),
        customer("3", "c@example.com", email_consent=None),
    ])
    with store.transaction() as conn:
        add_consent_events(conn, "mc", [
            ConsentUpdate("a@example.com", Channel.EMAIL, ConsentState.UNSUBSCRIBED, days_ago(5)),
            ConsentUpdate("b@example.com", Channel.EMAIL, ConsentState.UNSUBSCRIBED, days_ago(60)),
        ], 0)
    p = build(store, scopes=("mc",))
    assert p["e:a@example.com"]["email_consent"] == "unsubscribed"
    assert p["e:b@example.com"]["email_consent"] == "subscribed"
    assert p["e:c@example.com"]["email_consent"] == "none"
    other_pipeline = build(store)  # consent read back from another destination does not apply
    assert other_pipeline["e:a@example.com"]["email_consent"] == "subscribed"


def test_lifecycle_and_rfm_labels(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [
        customer("new", "new@example.com"), customer("lapsed", "old@example.com"),
        customer("champ", "champ@example.com"), customer("none", "none@example.com"),
    ])
    orders = [order("n1", "new", "100", 3), order("l1", "lapsed", "100", 400)]
    orders += [order(f"c{i}", "champ", "1000", 5 + i) for i in range(12)]
    store.stage("shop", Stream.ORDERS, orders)
    p = build(store)
    assert p["e:new@example.com"]["lifecycle_stage"] == "new"
    assert p["e:new@example.com"]["rfm_label"] == "new"
    assert p["e:old@example.com"]["lifecycle_stage"] == "lapsed"
    assert p["e:old@example.com"]["rfm_label"] == "lost"
    assert p["e:champ@example.com"]["rfm_label"] == "champions"
    assert p["e:champ@example.com"]["rfm_score"] == "555"
    assert p["e:none@example.com"]["lifecycle_stage"] == "prospect"
    assert p["e:none@example.com"]["days_since_last_order"] is None


def test_other_currencies_are_left_out_of_spend(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com")])
    store.stage("shop", Stream.ORDERS, [order("o1", "1", "100", 3),
                                        order("o2", "1", "100", 3, currency="EUR")])
    assert build(store)["e:a@example.com"]["total_spent"] == Decimal("100.00")


def test_birthday_and_deleted_flags(store: Store) -> None:
    from datetime import date

    store.stage("shop", Stream.CUSTOMERS, [
        customer("1", "a@example.com", birthday=date(1990, 11, 23)),
        customer("2", "gone@example.com", deleted=True, updated_at=NOW - timedelta(hours=1)),
    ])
    p = build(store)
    assert (p["e:a@example.com"]["birthday_month"], p["e:a@example.com"]["birthday_day"]) == (11, 23)
    assert p["e:gone@example.com"]["deleted"] is True
    assert p["e:a@example.com"]["deleted"] is False
