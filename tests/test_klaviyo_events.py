"""Klaviyo's events against the strict fake: metric names, values, line items, unique ids,
de-duplication, partial refusals, 429s, people Klaviyo cannot identify, and the calls per
10,000 events.

The fake validates every request against Klaviyo's OpenAPI spec and, on teardown, fails
the test for any spec violation and for anybody subscribed: an event never subscribes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connectors.http import BudgetRegistry
from connectors.klaviyo import KlaviyoConfig, KlaviyoDestination
from crmsync.contract import ConnectorContext, Outcome
from crmsync.events import Event, EventDestination, EventKind, EventLine, EventResult
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake

__all__ = ["klaviyo_fake"]

CONTEXT = ConnectorContext("klaviyo_events", Path("."))
BULK = ("POST", "/api/event-bulk-create-jobs")
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
SHOES = EventLine(
    product_id="p-1",
    name="Trail shoes",
    quantity=2,
    unit_price=Decimal("59.90"),
    sku="TS-42",
    discount=Decimal("10.00"),
    categories=("Shoes", "Outdoor"),
    image_url="https://shop.example/i/p-1.jpg",
    url="https://shop.example/p/p-1",
)
SOCKS = EventLine(product_id="p-2", name="Wool socks", quantity=1, unit_price=Decimal("9.50"))


def event(
    record: str = "1001",
    kind: EventKind = EventKind.PLACED_ORDER,
    *,
    email: str | None = "ayse@example.com",
    phone: str | None = None,
    lines: tuple[EventLine, ...] = (SHOES, SOCKS),
    value: Decimal | None = Decimal("119.30"),
    at: datetime = AT,
    historical: bool = False,
    line_no: int | None = None,
    **extra: Any,
) -> Event:
    key = f"{kind}:shop:{record}" + (f":{line_no}" if line_no is not None else "")
    return Event(
        key=key,
        kind=kind,
        person_key=f"e:{email}" if email else f"p:{phone}",
        occurred_at=at,
        source="shop",
        record_id=record,
        currency="TRY",
        value=value,
        lines=lines,
        email=email,
        phone=phone,
        historical=historical,
        **extra,
    )


def make(fake: FakeKlaviyo, **overrides: Any) -> KlaviyoDestination:
    config = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": fake.api_key, "base_url": fake.base_url, **overrides}
    )
    return KlaviyoDestination(config, CONTEXT, budgets=BudgetRegistry(), sleep=lambda seconds: None)


@pytest.fixture
def dest(klaviyo_fake: FakeKlaviyo) -> Iterator[KlaviyoDestination]:
    destination = make(klaviyo_fake)
    yield destination
    destination.close()


def by_key(results: list[EventResult]) -> dict[str, EventResult]:
    return {r.key: r for r in results}


def test_klaviyo_takes_events_under_the_standard_names(dest: KlaviyoDestination) -> None:
    assert isinstance(dest, EventDestination)
    assert dest.max_event_batch == 1_000
    assert dest.event_names() == {
        EventKind.PLACED_ORDER: "Placed Order",
        EventKind.ORDERED_PRODUCT: "Ordered Product",
        EventKind.FULFILLED_ORDER: "Fulfilled Order",
        EventKind.CANCELLED_ORDER: "Cancelled Order",
        EventKind.REFUNDED_ORDER: "Refunded Order",
        EventKind.STARTED_CHECKOUT: "Started Checkout",
    }


def test_a_placed_order_arrives_with_its_value_lines_and_unique_id(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    placed = event(properties={"status": "paid", "discount": Decimal("10.00")})
    assert dest.push_events([placed]) == [EventResult(placed.key, Outcome.OK)]
    [found] = klaviyo_fake.events_named("Placed Order")
    assert found.unique_id == "placed_order:shop:1001"
    assert (found.value, found.value_currency) == (119.3, "TRY")
    assert found.time == AT
    assert found.backfill is False
    props = found.properties
    assert props["OrderId"] == "1001"
    assert props["status"] == "paid" and props["discount"] == 10.0
    assert props["ItemNames"] == ["Trail shoes", "Wool socks"]
    assert props["Categories"] == ["Outdoor", "Shoes"]
    assert props["Items"][0] == {
        "ProductID": "p-1",
        "ProductName": "Trail shoes",
        "SKU": "TS-42",
        "Quantity": 2,
        "ItemPrice": 59.9,
        "RowTotal": 109.8,
        "Discount": 10.0,
        "Categories": ["Shoes", "Outdoor"],
        "ImageURL": "https://shop.example/i/p-1.jpg",
        "ProductURL": "https://shop.example/p/p-1",
    }
    # what the source lacks is left out, not sent empty
    assert props["Items"][1] == {
        "ProductID": "p-2",
        "ProductName": "Wool socks",
        "Quantity": 1,
        "ItemPrice": 9.5,
        "RowTotal": 9.5,
    }
    profile = klaviyo_fake.profile("ayse@example.com")
    assert profile is not None and found.profile_id == profile.id
    # the event created the profile and subscribed nobody
    assert klaviyo_fake.subscriptions() == {"ayse@example.com": "NEVER_SUBSCRIBED"}


def test_each_kind_goes_under_its_name_with_its_own_properties(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    events = [
        event(kind=EventKind.PLACED_ORDER),
        event(kind=EventKind.ORDERED_PRODUCT, lines=(SHOES,), value=None, line_no=1),
        event(kind=EventKind.FULFILLED_ORDER),
        event(kind=EventKind.CANCELLED_ORDER),
        event(kind=EventKind.REFUNDED_ORDER, value=Decimal("9.50"), lines=(SOCKS,)),
        event(
            "cart-7",
            EventKind.STARTED_CHECKOUT,
            checkout_url="https://shop.example/checkout/cart-7",
        ),
    ]
    results = dest.push_events(events)
    assert [r.outcome for r in results] == [Outcome.OK] * 6
    assert klaviyo_fake.calls[BULK] == 1
    assert {name: len(found) for name, found in klaviyo_fake.events.items()} == dict.fromkeys(
        dest.event_names().values(), 1
    )
    [product] = klaviyo_fake.events_named("Ordered Product")
    assert product.unique_id == "ordered_product:shop:1001:1"
    assert product.value == 109.8  # the line's total when the event carries none
    assert product.properties["ProductID"] == "p-1" and "Items" not in product.properties
    [refund] = klaviyo_fake.events_named("Refunded Order")
    assert refund.value == 9.5
    [checkout] = klaviyo_fake.events_named("Started Checkout")
    assert checkout.properties["CheckoutURL"] == "https://shop.example/checkout/cart-7"
    assert checkout.properties["CheckoutId"] == "cart-7"
    assert [i["ProductID"] for i in checkout.properties["Items"]] == ["p-1", "p-2"]


def test_names_come_from_the_configuration_and_empty_sends_nothing(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    dest = make(klaviyo_fake, events={"placed_order": "Order Placed", "ordered_product": ""})
    try:
        names = dest.event_names()
        assert names[EventKind.PLACED_ORDER] == "Order Placed"
        assert EventKind.ORDERED_PRODUCT not in names
        product = event(kind=EventKind.ORDERED_PRODUCT, lines=(SHOES,), line_no=1)
        results = by_key(dest.push_events([event(), product]))
    finally:
        dest.close()
    assert results["placed_order:shop:1001"].outcome is Outcome.OK
    assert results[product.key].outcome is Outcome.REJECTED
    assert [e.unique_id for e in klaviyo_fake.events_named("Order Placed")] == [
        "placed_order:shop:1001"
    ]
    assert klaviyo_fake.events_named("Ordered Product") == []


def test_a_metric_name_too_long_for_klaviyo_is_a_config_error(klaviyo_fake: FakeKlaviyo) -> None:
    with pytest.raises(ValidationError, match="127 characters"):
        make(klaviyo_fake, events={"placed_order": "x" * 128})


def test_a_resent_event_is_recorded_once(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    placed = event()
    assert dest.push_events([placed])[0].outcome is Outcome.OK
    # the answer was lost, say, and the ledger sends it again: Klaviyo keeps the first
    assert dest.push_events([placed])[0].outcome is Outcome.OK
    assert len(klaviyo_fake.events_named("Placed Order")) == 1
    assert klaviyo_fake.duplicate_events == 1


def test_the_same_event_twice_in_a_batch_goes_once(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    placed = event()
    results = dest.push_events([placed, placed])
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
    assert klaviyo_fake.calls[BULK] == 1
    assert klaviyo_fake.duplicate_events == 0
    assert len(klaviyo_fake.events_named("Placed Order")) == 1


def test_a_refused_entry_is_rejected_and_the_rest_go_in_one_more_call(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    good = [event(f"10{i}", email=f"p{i}@example.com") for i in range(4)]
    bad_email = event("200", email="ayse@example")  # Klaviyo refuses the address
    results = by_key(dest.push_events([good[0], bad_email, *good[1:]]))
    assert results[bad_email.key].outcome is Outcome.REJECTED
    assert "Invalid email address" in results[bad_email.key].message
    assert all(results[e.key].outcome is Outcome.OK for e in good)
    assert klaviyo_fake.calls[BULK] == 2
    assert sorted(e.unique_id for e in klaviyo_fake.events_named("Placed Order")) == sorted(
        e.key for e in good
    )


def test_a_refusal_of_one_event_rejects_that_event_not_the_persons_others(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    huge = event("400", kind=EventKind.FULFILLED_ORDER, properties={"note": "x" * 101 * 1024})
    fine = event("400")
    results = by_key(dest.push_events([fine, huge]))
    assert results[huge.key].outcome is Outcome.REJECTED
    assert "100KB" in results[huge.key].message
    assert results[fine.key].outcome is Outcome.OK
    assert [e.unique_id for e in klaviyo_fake.events_named("Placed Order")] == [fine.key]
    assert klaviyo_fake.events_named("Fulfilled Order") == []


def test_an_event_klaviyo_would_refuse_for_its_time_is_rejected_without_a_call(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    far = event(at=datetime.now(UTC) + timedelta(days=400))
    old = event("9", at=datetime(1989, 5, 1, tzinfo=UTC))
    results = dest.push_events([far, old])
    assert [r.outcome for r in results] == [Outcome.REJECTED, Outcome.REJECTED]
    assert "1990" in results[0].message
    assert klaviyo_fake.calls[BULK] == 0


def test_a_person_without_email_or_phone_is_rejected(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    nobody = event("300", email=None, phone=None)
    phone_only = event("301", email=None, phone="+905321234567")
    results = by_key(dest.push_events([nobody, phone_only]))
    assert results[nobody.key].outcome is Outcome.REJECTED
    assert "e-mail or phone" in results[nobody.key].message
    assert results[phone_only.key].outcome is Outcome.OK
    profile = klaviyo_fake.profile_by_phone("+905321234567")
    assert profile is not None
    [found] = klaviyo_fake.events_named("Placed Order")
    assert found.profile_id == profile.id


def test_429_is_retried_after_retry_after(klaviyo_fake: FakeKlaviyo) -> None:
    slept: list[float] = []
    config = KlaviyoConfig.model_validate(
        {"kind": "klaviyo", "api_key": klaviyo_fake.api_key, "base_url": klaviyo_fake.base_url}
    )
    dest = KlaviyoDestination(config, CONTEXT, budgets=BudgetRegistry(), sleep=slept.append)
    klaviyo_fake.inject(429, method="POST", path=BULK[1], retry_after="1")
    try:
        results = dest.push_events([event()])
    finally:
        dest.close()
    assert results[0].outcome is Outcome.OK
    assert klaviyo_fake.calls[BULK] == 2
    assert slept and max(slept) >= 1  # the seam waited as Klaviyo asked
    assert len(klaviyo_fake.events_named("Placed Order")) == 1


def test_an_outage_leaves_the_events_failed_for_a_later_run(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    klaviyo_fake.inject(503, method="POST", path=BULK[1], times=50)
    results = dest.push_events([event(), event("1002")])
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert klaviyo_fake.event_count() == 0


def test_a_lost_answer_and_a_resend_record_the_event_once(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    """The call is applied and its answer lost (a crash mid-push looks the same): the
    re-run's resend is dropped by Klaviyo's unique id."""
    klaviyo_fake.inject(503, method="POST", path=BULK[1], times=50, after=True)
    assert dest.push_events([event()])[0].outcome is Outcome.FAILED
    klaviyo_fake.faults.pending.clear()
    assert dest.push_events([event()])[0].outcome is Outcome.OK
    assert len(klaviyo_fake.events_named("Placed Order")) == 1


def test_backfilled_events_are_flagged_so_no_flow_fires(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    past = event("1", at=datetime(2024, 3, 1, 12, tzinfo=UTC), historical=True)
    live = event("2")
    assert [r.outcome for r in dest.push_events([past, live])] == [Outcome.OK, Outcome.OK]
    found = {e.unique_id: e for e in klaviyo_fake.events_named("Placed Order")}
    assert found[past.key].backfill is True
    assert found[past.key].time == datetime(2024, 3, 1, 12, tzinfo=UTC)  # its true time
    assert found[live.key].backfill is False


def test_the_time_is_the_platform_instant_whatever_the_zone(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    istanbul = datetime(2026, 11, 20, 23, 45, 12, 900_000, tzinfo=ZoneInfo("Europe/Istanbul"))
    dest.push_events([event(at=istanbul, kind=EventKind.FULFILLED_ORDER)])
    [found] = klaviyo_fake.events_named("Fulfilled Order")
    assert found.time == datetime(2026, 11, 20, 20, 45, 12, tzinfo=UTC)


def test_calls_per_10000_events_are_the_floor(
    klaviyo_fake: FakeKlaviyo, dest: KlaviyoDestination
) -> None:
    events = [
        event(
            f"{i}",
            EventKind.PLACED_ORDER if i % 2 else EventKind.FULFILLED_ORDER,
            email=f"p{i % 2_500:05d}@example.com",
            lines=(SOCKS,),
            value=Decimal("9.50"),
        )
        for i in range(10_000)
    ]
    batch = dest.max_event_batch
    results: list[EventResult] = []
    for start in range(0, len(events), batch):
        results.extend(dest.push_events(events[start : start + batch]))
    assert {r.outcome for r in results} == {Outcome.OK}
    assert klaviyo_fake.calls[BULK] <= math.ceil(len(events) / batch) == 10
    assert klaviyo_fake.event_count() == 10_000


def test_calls_are_cut_by_size_too(klaviyo_fake: FakeKlaviyo) -> None:
    dest = make(klaviyo_fake, jobs={"bytes_per_event_call": 4096})
    try:
        events = [event(f"{i}", email=f"p{i}@example.com") for i in range(12)]
        results = dest.push_events(events)
    finally:
        dest.close()
    assert {r.outcome for r in results} == {Outcome.OK}
    assert klaviyo_fake.calls[BULK] > 1
    assert klaviyo_fake.event_count() == 12
