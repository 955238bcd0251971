"""Profiles: identity merging and every metric, on both state engines."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from crmsync.config import ProfileSettings
from crmsync.contract import ConsentUpdate
from crmsync.records import Channel, Consent, ConsentState, OrderStatus, Stream
from engine.profiles import ProfileContext, iter_profiles
from state.ledger import add_consent_events
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, cart, customer, days_ago, order


def build(
    store: Store, sources: tuple[str, ...] = ("shop",), scopes: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    ctx = ProfileContext(
        sources=sources,
        consent_scopes=sources + scopes,
        currency="TRY",
        as_of_ms=to_ms(NOW) or 0,
        settings=ProfileSettings(),
    )
    with store.engine.connect() as conn:
        return {p["person_key"]: p for p in iter_profiles(conn, ctx)}


@pytest.fixture
def store(state_url: str) -> Store:
    return Store(state_url)


def test_spend_counts_and_windows_leave_out_cancelled_and_refunded(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "ayse@example.com")])
    store.stage(
        "shop",
        Stream.ORDERS,
        [
            order("o1", "1", "100.50", 10, discount="10"),
            order("o2", "1", "200", 60, refunded="50"),
            order("o3", "1", "1000", 5, status=OrderStatus.CANCELLED),
            order("o4", "1", "300", 200, status=OrderStatus.REFUNDED),
            order("o5", "1", "400", 300, categories=("Elektronik", "Kitap")),
            order("o6", "1", "999", -1),  # placed after the as-of time: not yet
        ],
    )
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


IDENTITY = {
    "phone": "+905321112233",
    "first_name": "Ayşe",
    "last_name": "Işık",
    "city": "İzmir",
    "region": "Karşıyaka",
    "country": "TR",
    "postal_code": "35540",
    "address1": "Cemal Gürsel Cd. 1",
    "language": "tr",
}


def test_every_identity_field_lands_under_its_own_name_from_one_or_two_rows(
    store: Store,
) -> None:
    """One customer row takes a fast path, several the general one: both, field by field."""
    born = date(1990, 2, 3)
    store.stage("solo", Stream.CUSTOMERS, [customer("1", "solo@example.com", **IDENTITY)])
    newer = customer("2", "two@example.com", **IDENTITY, updated_at=days_ago(1))
    older = customer("3", "two@example.com", birthday=born, updated_at=days_ago(9))
    store.stage("pair", Stream.CUSTOMERS, [newer, older])

    solo = build(store, ("solo",))["e:solo@example.com"]
    assert {name: solo[name] for name in IDENTITY} == IDENTITY
    assert solo["full_name"] == "Ayşe Işık" and solo["birthday"] is None

    pair = build(store, ("pair",))["e:two@example.com"]
    assert {name: pair[name] for name in IDENTITY} == IDENTITY  # the newer row wins
    assert pair["birthday"] == born  # the older row fills what the newer one lacks
    assert (pair["birthday_month"], pair["birthday_day"]) == (2, 3)


def test_people_merge_by_email_then_phone_and_guest_orders_join_by_email(store: Store) -> None:
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "can@example.com", phone="+905321112233")])
    store.stage(
        "pos",
        Stream.CUSTOMERS,
        [
            customer("A", None, phone="+905321112233", first_name="Can", city=None, updated_at=NOW),
            customer("B", "can@example.com", city="Ankara", updated_at=days_ago(1)),
        ],
    )
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
    store.stage(
        "other_store", Stream.CUSTOMERS, [customer("1", "x@example.com", phone="+905321112233")]
    )
    store.stage("shop", Stream.CUSTOMERS, [customer("2", None, phone="+905321112233")])
    assert list(build(store)) == ["p:+905321112233"]


def test_open_cart_is_abandoned_after_the_threshold_unless_an_order_followed(store: Store) -> None:
    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer("1", "a@example.com"),
            customer("2", "b@example.com"),
            customer("3", "c@example.com"),
        ],
    )
    store.stage(
        "shop",
        Stream.CARTS,
        [
            cart("k1", "1", "250", hours_ago=30),
            cart("k2", "2", "90", hours_ago=1),
            cart("k3", "3", "80", hours_ago=48),
        ],
    )
    store.stage("shop", Stream.ORDERS, [order("o3", "3", "80", 1)])
    p = build(store)
    assert p["e:a@example.com"]["cart_abandoned"] is True
    assert p["e:a@example.com"]["cart_value"] == Decimal("250.00")
    assert p["e:a@example.com"]["cart_url"] == "https://shop.example.com/checkout/k1"
    assert p["e:b@example.com"]["cart_open"] is True
    assert p["e:b@example.com"]["cart_abandoned"] is False
    assert p["e:c@example.com"]["cart_open"] is False


def test_latest_consent_wins_and_an_opt_out_read_back_beats_an_older_opt_in(store: Store) -> None:
    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer(
                "1", "a@example.com", email_consent=Consent(ConsentState.SUBSCRIBED, days_ago(30))
            ),
            customer(
                "2", "b@example.com", email_consent=Consent(ConsentState.SUBSCRIBED, days_ago(30))
            ),
            customer("3", "c@example.com", email_consent=None),
        ],
    )
    with store.transaction() as conn:
        add_consent_events(
            conn,
            "mc",
            [
                ConsentUpdate(
                    "a@example.com", Channel.EMAIL, ConsentState.UNSUBSCRIBED, days_ago(5)
                ),
                ConsentUpdate(
                    "b@example.com", Channel.EMAIL, ConsentState.UNSUBSCRIBED, days_ago(60)
                ),
            ],
            0,
        )
    p = build(store, scopes=("mc",))
    assert p["e:a@example.com"]["email_consent"] == "unsubscribed"
    assert p["e:b@example.com"]["email_consent"] == "subscribed"
    assert p["e:c@example.com"]["email_consent"] == "none"
    other_pipeline = build(store)  # consent read back from another destination does not apply
    assert other_pipeline["e:a@example.com"]["email_consent"] == "subscribed"


def test_lifecycle_and_rfm_labels(store: Store) -> None:
    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer("new", "new@example.com"),
            customer("lapsed", "old@example.com"),
            customer("champ", "champ@example.com"),
            customer("none", "none@example.com"),
        ],
    )
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
    store.stage(
        "shop",
        Stream.ORDERS,
        [order("o1", "1", "100", 3), order("o2", "1", "100", 3, currency="EUR")],
    )
    assert build(store)["e:a@example.com"]["total_spent"] == Decimal("100.00")


def test_birthday_and_deleted_flags(store: Store) -> None:
    from datetime import date

    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer("1", "a@example.com", birthday=date(1990, 11, 23)),
            customer("2", "gone@example.com", deleted=True, updated_at=NOW - timedelta(hours=1)),
        ],
    )
    p = build(store)
    assert (p["e:a@example.com"]["birthday_month"], p["e:a@example.com"]["birthday_day"]) == (
        11,
        23,
    )
    assert p["e:gone@example.com"]["deleted"] is True
    assert p["e:a@example.com"]["deleted"] is False


def test_orders_and_carts_follow_their_customer_when_its_email_changes(store: Store) -> None:
    store.stage(
        "shop", Stream.CUSTOMERS, [customer("1", "old@example.com", updated_at=days_ago(9))]
    )
    store.stage("shop", Stream.ORDERS, [order("o1", "1", "100", 5), order("o2", "1", "50", 4)])
    store.stage("shop", Stream.CARTS, [cart("k1", "1", "75", hours_ago=30)])
    assert build(store)["e:old@example.com"]["orders_count"] == 2

    store.stage(
        "shop", Stream.CUSTOMERS, [customer("1", "new@example.com", updated_at=days_ago(1))]
    )
    profiles = build(store)
    assert list(profiles) == ["e:new@example.com"]  # nothing left behind under the old key
    p = profiles["e:new@example.com"]
    assert p["orders_count"] == 2 and p["total_spent"] == Decimal("150.00")
    assert p["cart_open"] is True and p["cart_value"] == Decimal("75.00")


def test_an_order_staged_before_its_customer_joins_the_customer_once_it_arrives(
    store: Store,
) -> None:
    store.stage(
        "shop",
        Stream.ORDERS,
        [order("o1", "1", "100", 5, email="guest@example.com"), order("o2", "2", "40", 5)],
    )
    assert sorted(build(store)) == ["e:guest@example.com", "s:shop:2"]

    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [customer("1", "ayse@example.com"), customer("2", None, phone="+905320000002")],
    )
    profiles = build(store)
    assert sorted(profiles) == ["e:ayse@example.com", "p:+905320000002"]
    assert profiles["e:ayse@example.com"]["orders_count"] == 1
    assert profiles["p:+905320000002"]["total_spent"] == Decimal("40.00")


def test_a_phone_linked_customer_brings_its_orders_and_cart_under_the_email_key(
    store: Store,
) -> None:
    store.stage(
        "shop",
        Stream.CUSTOMERS,
        [
            customer("1", "can@example.com", phone="+905321112233", updated_at=days_ago(20)),
            customer("2", "zeynep@example.com"),
        ],
    )
    store.stage(
        "pos",
        Stream.CUSTOMERS,
        [customer("A", None, phone="+905321112233", first_name="Can", updated_at=days_ago(2))],
    )
    store.stage("pos", Stream.ORDERS, [order("p1", "A", "50", 3), order("p2", "A", "30", 400)])
    store.stage("pos", Stream.CARTS, [cart("k1", "A", "20", hours_ago=10)])
    store.stage("shop", Stream.ORDERS, [order("s1", "1", "70", 2)])
    profiles = build(store, ("shop", "pos"))
    assert sorted(profiles) == ["e:can@example.com", "e:zeynep@example.com"]
    p = profiles["e:can@example.com"]
    assert (p["orders_count"], p["total_spent"]) == (3, Decimal("150.00"))
    assert p["first_name"] == "Can" and p["sources"] == ("pos", "shop")
    assert p["cart_open"] is True and p["cart_value"] == Decimal("20.00")
    assert p["first_order_at"] == days_ago(400)
    # without the e-mail customer's source, the phone customer stays a person of its own
    assert build(store, ("pos",))["p:+905321112233"]["orders_count"] == 2


def test_profiles_built_slice_by_slice_equal_one_pass(store: Store) -> None:
    from crmsync.records import Cart, Customer
    from crmsync.sample import SampleSpec, iter_store
    from state.profile_reads import key_boundaries, ranges

    pending: dict[Stream, list[Any]] = {Stream.CUSTOMERS: [], Stream.ORDERS: [], Stream.CARTS: []}
    for record in iter_store(SampleSpec(customers=300, seed=5, now=NOW)):
        kind = (
            Stream.CUSTOMERS
            if isinstance(record, Customer)
            else (Stream.CARTS if isinstance(record, Cart) else Stream.ORDERS)
        )
        pending[kind].append(record)
    pending[Stream.CUSTOMERS].append(customer("x", None, phone="+905550000001"))
    pending[Stream.CUSTOMERS].append(customer("y", "linked@example.com", phone="+905550000001"))
    pending[Stream.ORDERS].append(order("xo", "x", "10", 1))
    for kind, records in pending.items():
        store.stage("shop", kind, records)
    ctx = ProfileContext(
        sources=("shop",),
        consent_scopes=("shop",),
        currency="TRY",
        as_of_ms=to_ms(NOW) or 0,
        settings=ProfileSettings(),
    )
    with store.engine.connect() as conn:
        whole = list(iter_profiles(conn, ctx))
        boundaries = key_boundaries(conn, ("shop",), 7)
        sliced = [p for keys in ranges(boundaries) for p in iter_profiles(conn, ctx, keys)]
    assert len(boundaries) == 6 and len(whole) > 300
    assert sliced == whole
    assert [p["person_key"] for p in whole] == sorted(p["person_key"] for p in whole)
    linked = next(p for p in whole if p["person_key"] == "e:linked@example.com")
    assert linked["orders_count"] == 1


def test_no_profile_stream_looks_up_rows_by_source_through_an_index(state_url: str) -> None:
    """Without statistics a planner takes ``source IN (...)`` for selective, though it
    matches every row of a one-source store: used as an index condition, it made each
    phone-link look-up on PostgreSQL scan the whole primary key (10 s a slice at 100k)."""
    import sqlalchemy as sa

    from crmsync.profile_scope import KeyRange
    from state import profile_reads

    store = Store(state_url)
    people = [customer(str(i), f"p{i}@example.com", phone=f"+9053200{i:05d}") for i in range(300)]
    people += [customer(f"x{i}", None, phone=f"+9053200{i:05d}") for i in range(0, 300, 7)]
    store.stage("shop", Stream.CUSTOMERS, people)
    store.stage("shop", Stream.ORDERS, [order(f"o{i}", f"x{i}", "10", 3) for i in range(0, 300, 7)])
    ctx = ProfileContext(("shop",), ("shop",), "TRY", to_ms(NOW) or 0, ProfileSettings())
    keys = KeyRange("e:p1", "e:p2")
    queries = [
        profile_reads.customers_query,
        profile_reads.orders_query,
        profile_reads.carts_query,
        profile_reads.linked_customers_query,
        profile_reads.linked_orders_query,
        profile_reads.linked_carts_query,
    ]
    with store.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        for query in queries:
            statement = query(conn, ctx, keys).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = "\n".join(str(r[-1]) for r in conn.execute(sa.text(explain + str(statement))))
            if postgres:
                assert "Index Cond: ((source)" not in plan, (query.__name__, plan)
            else:
                assert "(source=?" not in plan and "pkey" not in plan, (query.__name__, plan)
        linked = list(iter_profiles(conn, ctx, keys))
    assert {p["person_key"] for p in linked} >= {"e:p14@example.com", "e:p105@example.com"}
    store.close()
