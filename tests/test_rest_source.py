"""RestSource.read against respx: mapping, pagination through the source, incremental bounds,
quarantine, and configuration failures found while reading."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from connectors.http import BudgetRegistry
from connectors.rest import PaginationLoopError, RestSource
from crmsync.contract import ConnectorContext
from crmsync.errors import ConfigError, ConnectorError
from crmsync.records import (
    Cart,
    CartItem,
    Consent,
    ConsentState,
    Customer,
    IssueAction,
    Order,
    OrderLine,
    OrderStatus,
    RecordIssue,
    Stream,
)
from tests.fakes import FakeClock

BASE = "https://api.shop.test"
UNTIL = datetime(2026, 1, 1, tzinfo=UTC)
CONTEXT = ConnectorContext("shop", Path("."), default_region="TR", timezone="Europe/Istanbul")

CUSTOMER_FIELDS = {
    "external_id": "id",
    "email": "contact.email",
    "phone": "contact.phone",
    "first_name": "name.first",
    "last_name": "name.last",
    "country": "address.country",
    "updated_at": "updated",
    "email_consent": {"path": "marketing.email", "map": {"opted": "subscribed"}},
    "email_consent_at": "marketing.email_at",
}


def source(streams: dict[str, Any], **extra: Any) -> RestSource:
    clock = FakeClock()
    config = {"kind": "rest", "base_url": BASE, "streams": streams, **extra}
    budgets = BudgetRegistry(clock=clock, sleep=clock.sleep)
    return RestSource(config, CONTEXT, sleep=clock.sleep, budgets=budgets)


def customers_stream(**extra: Any) -> dict[str, Any]:
    return {
        "path": "/v1/customers",
        "records_path": "data",
        "pagination": {"type": "cursor", "cursor_path": "next", "param": "cursor"},
        "fields": CUSTOMER_FIELDS,
        **extra,
    }


def raw_customer(
    number: int, updated: str = "2025-06-01T10:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "id": number,
        "contact": {"email": f" Person{number}@Example.COM ", "phone": "0532 123 45 67"},
        "name": {"first": "Ayşe", "last": "Yılmaz"},
        "address": {"country": "Türkiye"},
        "updated": updated,
        "marketing": {"email": "opted", "email_at": "2025-05-01T00:00:00Z"},
        **extra,
    }


def read_all(src: RestSource, stream: Stream, since: datetime | None = None) -> list[Any]:
    return list(src.read(stream, since, UNTIL))


def test_maps_nested_json_to_normalised_canonical_customers() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, json={"data": [raw_customer(1)], "next": None})
        [record] = read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    assert record == Customer(
        external_id="1",
        email="person1@example.com",
        phone="+905321234567",
        first_name="Ayşe",
        last_name="Yılmaz",
        country="TR",
        updated_at=datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        email_consent=Consent(ConsentState.SUBSCRIBED, datetime(2025, 5, 1, tzinfo=UTC)),
    )


def test_follows_a_body_cursor_across_pages_sending_static_params_and_page_size() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").mock(
            side_effect=[
                httpx.Response(200, json={"data": [raw_customer(1)], "next": "c2"}),
                httpx.Response(200, json={"data": [raw_customer(2)], "next": None}),
            ]
        )
        stream = customers_stream(
            page_size_param="limit", page_size=1, params={"status": "active", "deep": True}
        )
        records = read_all(source({"customers": stream}), Stream.CUSTOMERS)
    assert [r.external_id for r in records] == ["1", "2"]
    first, second = (call.request.url.params for call in route.calls)
    assert dict(first) == {"status": "active", "deep": "true", "limit": "1"}
    assert dict(second) == {"status": "active", "deep": "true", "limit": "1", "cursor": "c2"}


def test_follows_link_header_urls() -> None:
    stream = customers_stream(pagination={"type": "link_header"}, records_path="")
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers", params={"page_info": "p2"}).respond(200, json=[raw_customer(2)])
        mock.get("/v1/customers").respond(
            200,
            json=[raw_customer(1)],
            headers={"Link": f'<{BASE}/v1/customers?page_info=p2>; rel="next"'},
        )
        records = read_all(source({"customers": stream}), Stream.CUSTOMERS)
    assert [r.external_id for r in records] == ["1", "2"]


def test_follows_a_next_url_in_the_body() -> None:
    stream = customers_stream(pagination={"type": "next_url", "next_url_path": "links.next"})
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers", params={"p": "2"}).respond(
            200, json={"data": [raw_customer(2)], "links": {"next": None}}
        )
        mock.get("/v1/customers").respond(
            200, json={"data": [raw_customer(1)], "links": {"next": "/v1/customers?p=2"}}
        )
        records = read_all(source({"customers": stream}), Stream.CUSTOMERS)
    assert [r.external_id for r in records] == ["1", "2"]


def test_page_and_offset_strategies_through_the_source() -> None:
    by_page = customers_stream(pagination={"type": "page"}, page_size_param="n", page_size=2)
    by_offset = customers_stream(pagination={"type": "offset"}, page_size_param="n", page_size=2)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers", params={"page": "1"}).respond(
            200, json={"data": [raw_customer(1), raw_customer(2)]}
        )
        mock.get("/v1/customers", params={"page": "2"}).respond(
            200, json={"data": [raw_customer(3)]}
        )
        paged = read_all(source({"customers": by_page}), Stream.CUSTOMERS)
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers", params={"offset": "0"}).respond(
            200, json={"data": [raw_customer(1), raw_customer(2)]}
        )
        mock.get("/v1/customers", params={"offset": "2"}).respond(200, json={"data": []})
        offset = read_all(source({"customers": by_offset}), Stream.CUSTOMERS)
    assert [r.external_id for r in paged] == ["1", "2", "3"]
    assert [r.external_id for r in offset] == ["1", "2"]


def test_a_next_link_to_another_host_is_refused() -> None:
    stream = customers_stream(pagination={"type": "next_url", "next_url_path": "next"})
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(
            200, json={"data": [raw_customer(1)], "next": "https://evil.test/steal"}
        )
        with pytest.raises(ConnectorError, match="another host"):
            read_all(source({"customers": stream}), Stream.CUSTOMERS)


def test_a_looping_cursor_stops_the_read_with_a_clear_error() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, json={"data": [raw_customer(1)], "next": "same"})
        with pytest.raises(PaginationLoopError, match="pagination loops"):
            read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)


@pytest.mark.parametrize(
    ("fmt", "extra", "expected"),
    [
        ("iso8601", {}, "2025-03-04T05:06:07Z"),
        ("epoch", {}, "1741064767"),
        ("epoch_ms", {}, "1741064767000"),
        ("strftime", {"incremental_strftime": "%Y%m%d%H%M%S"}, "20250304050607"),
    ],
)
def test_since_is_sent_in_the_configured_format(
    fmt: str, extra: dict[str, str], expected: str
) -> None:
    stream = customers_stream(incremental_param="updated_after", incremental_format=fmt, **extra)
    since = datetime(
        2025, 3, 4, 8, 6, 7, tzinfo=datetime.fromisoformat("2025-01-01T00:00+03:00").tzinfo
    )
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").respond(200, json={"data": [], "next": None})
        read_all(source({"customers": stream}), Stream.CUSTOMERS, since=since)
    assert route.calls.last.request.url.params["updated_after"] == expected


def test_a_full_read_sends_no_since_parameter() -> None:
    stream = customers_stream(incremental_param="updated_after")
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").respond(200, json={"data": [], "next": None})
        read_all(source({"customers": stream}), Stream.CUSTOMERS)
    assert "updated_after" not in route.calls.last.request.url.params


def test_records_outside_since_until_are_dropped_and_duplicates_kept() -> None:
    since = datetime(2025, 6, 1, tzinfo=UTC)
    rows = [
        raw_customer(1, "2025-05-31T23:59:59Z"),  # before since: already staged
        raw_customer(2, "2025-06-01T00:00:00Z"),  # exactly since: excluded, (since, until]
        raw_customer(3, "2025-12-31T23:59:59Z"),
        raw_customer(3, "2025-12-31T23:59:59Z"),  # duplicate across pages: yielded again
        raw_customer(4, "2026-01-01T00:00:00Z"),  # exactly until: included
        raw_customer(5, "2026-01-01T00:00:01Z"),  # changed after the run started: next run
    ]
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, json={"data": rows, "next": None})
        records = read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS, since)
    assert [r.external_id for r in records] == ["3", "3", "4"]


def test_a_bad_record_is_quarantined_naming_the_field_and_the_read_goes_on() -> None:
    rows = [
        raw_customer(1),
        raw_customer(2, contact={"email": "not-an-address", "phone": ""}),
        raw_customer(3, updated="yesterday-ish"),
        {"contact": {}},  # no id at all
        raw_customer(4),
    ]
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, json={"data": rows, "next": None})
        items = read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    records = [i for i in items if not isinstance(i, RecordIssue)]
    issues = [i for i in items if isinstance(i, RecordIssue)]
    assert [r.external_id for r in records] == ["1", "4"]
    assert [(i.external_id, i.field, i.action) for i in issues] == [
        ("2", "email", IssueAction.QUARANTINED),
        ("3", "updated_at", IssueAction.QUARANTINED),
        (None, "external_id", IssueAction.QUARANTINED),
    ]
    assert "not-an-address" in issues[0].reason and issues[0].excerpt.startswith("{")


def test_an_over_long_text_is_truncated_and_reported_as_corrected() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(
            200, json={"data": [raw_customer(1, name={"first": "A" * 300})], "next": None}
        )
        record, issue = read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    assert isinstance(record, Customer) and record.first_name == "A" * 255
    assert isinstance(issue, RecordIssue)
    assert (issue.action, issue.field, issue.external_id) == (
        IssueAction.CORRECTED,
        "first_name",
        "1",
    )


ORDER_STREAM = {
    "path": "/v1/orders",
    "pagination": {"type": "none"},
    "fields": {
        "external_id": "id",
        "customer_external_id": {"path": "customer.id", "null_if": ["0"]},
        "email": "customer.email",
        "placed_at": {"path": "created", "timezone": "UTC"},
        "updated_at": {"path": ["modified", "created"], "timezone": "UTC"},
        "status": {"path": "state", "map": {"on-hold": "pending"}},
        "currency": "currency",
        "total": "total",
        "discount_total": {"path": "discounts", "sum": "amount"},
        "refunded_total": {"path": "refunds", "sum": "total", "abs": True},
    },
    "lines": {
        "path": "items",
        "fields": {
            "sku": "sku",
            "product": "title",
            "category": "meta_data[key=category].value",
            "quantity": "qty",
            "unit_price": {"path": "subtotal", "per": "qty"},
            "discount": {"path": "subtotal", "minus": "total"},
        },
    },
}


def test_orders_with_nested_lines_sums_and_value_maps() -> None:
    raw = {
        "id": 77,
        "customer": {"id": 0, "email": "Guest@Example.com"},
        "created": "2025-02-03T04:05:06",
        "modified": None,
        "state": "on-hold",
        "currency": "try",
        "total": "1.234,50",
        "discounts": [{"amount": "10.00"}, {"amount": 5}],
        "refunds": [{"total": "-20.00"}],
        "items": [
            {
                "sku": "SKU-1",
                "title": "Çay",
                "qty": 3,
                "subtotal": "30.00",
                "total": "27.00",
                "meta_data": [
                    {"key": "colour", "value": "red"},
                    {"key": "category", "value": "İçecek"},
                ],
            }
        ],
    }
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/orders").respond(200, json=[raw])
        [order] = read_all(source({"orders": ORDER_STREAM}), Stream.ORDERS)
    placed = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert order == Order(
        external_id="77",
        customer_external_id=None,
        email="guest@example.com",
        placed_at=placed,
        status=OrderStatus.PENDING,
        currency="TRY",
        total=Decimal("1234.50"),
        discount_total=Decimal("15.00"),
        refunded_total=Decimal("20.00"),
        updated_at=placed,
        lines=(OrderLine("SKU-1", "Çay", "İçecek", 3, Decimal("10"), Decimal("3.00")),),
    )


def test_a_bad_order_line_quarantines_the_order_naming_the_line() -> None:
    raw = {
        "id": 78,
        "customer": {"id": 5},
        "created": "2025-02-03T04:05:06",
        "state": "paid",
        "currency": "TRY",
        "total": "10",
        "items": [{"sku": "A", "qty": 1, "subtotal": "10", "total": "10"}, {"sku": "B", "qty": 0}],
    }
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/orders").respond(200, json=[raw])
        [issue] = read_all(source({"orders": ORDER_STREAM}), Stream.ORDERS)
    assert isinstance(issue, RecordIssue)
    assert issue.field == "lines[1].quantity"
    assert issue.external_id == "78"


def test_a_list_endpoint_refusing_the_request_is_a_config_error() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(400, json={"message": "Invalid parameter(s): limit"})
        with pytest.raises(ConfigError, match="Invalid parameter") as raised:
            read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    assert raised.value.issues[0].key == "sources.shop.streams.customers"


def test_a_404_on_the_stream_path_names_the_path_key() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(404)
        with pytest.raises(ConfigError, match=r"sources\.shop\.streams\.customers\.path"):
            read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)


def test_html_instead_of_json_is_a_config_error() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, text="<html>WordPress</html>")
        with pytest.raises(ConfigError, match="not JSON"):
            read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)


def test_a_records_path_that_finds_no_list_is_a_config_error() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/customers").respond(200, json={"items": [], "next": None})
        with pytest.raises(ConfigError, match="records_path") as raised:
            read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    assert raised.value.issues[0].key == "sources.shop.streams.customers.records_path"


def test_transient_failures_are_retried_inside_a_read() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/customers").mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(429, headers={"Retry-After": "1"}),
                httpx.ReadTimeout("slow"),
                httpx.Response(200, json={"data": [raw_customer(1)], "next": None}),
            ]
        )
        records = read_all(source({"customers": customers_stream()}), Stream.CUSTOMERS)
    assert [r.external_id for r in records] == ["1"]
    assert route.call_count == 4


def test_only_enabled_streams_are_offered_and_read() -> None:
    src = source({"customers": customers_stream(), "orders": {**ORDER_STREAM, "enabled": False}})
    assert src.streams() == [Stream.CUSTOMERS]
    assert read_all(src, Stream.ORDERS) == []


def test_carts_with_items() -> None:
    stream = {
        "path": "/v1/carts",
        "records_path": "carts",
        "pagination": {"type": "none"},
        "fields": {
            "external_id": "token",
            "customer_external_id": "customer_id",
            "email": "email",
            "currency": "currency",
            "value": "total",
            "updated_at": {"path": "updated_at", "format": "%d.%m.%Y %H:%M", "timezone": "UTC"},
            "checkout_url": "recovery_url",
            "converted": "completed",
        },
        "items": {
            "path": "lines",
            "fields": {"sku": "sku", "quantity": "qty", "unit_price": "price"},
        },
    }
    raw = {
        "token": "cart-9",
        "customer_id": 12,
        "email": "a@b.example.com",
        "currency": "EUR",
        "total": "19,90",
        "updated_at": "05.01.2025 14:30",
        "recovery_url": "https://shop.test/r/9",
        "completed": "no",
        "lines": [{"sku": "X", "qty": "2", "price": 9.95}],
    }
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/carts").respond(200, json={"carts": [raw]})
        [cart] = read_all(source({"carts": stream}), Stream.CARTS)
    assert cart == Cart(
        external_id="cart-9",
        customer_external_id="12",
        email="a@b.example.com",
        currency="EUR",
        value=Decimal("19.90"),
        updated_at=datetime(2025, 1, 5, 14, 30, tzinfo=UTC),
        checkout_url="https://shop.test/r/9",
        converted=False,
        items=(CartItem("X", None, None, 2, Decimal("9.95")),),
    )
    bad = {**raw, "token": "cart-10", "lines": [{"sku": "X", "qty": "2", "price": 9.95}, {}]}
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/carts").respond(200, json={"carts": [bad]})
        [issue] = read_all(source({"carts": stream}), Stream.CARTS)
    assert isinstance(issue, RecordIssue) and issue.external_id == "cart-10"
    assert issue.field == "items[1].quantity"  # a cart's rows are its items
