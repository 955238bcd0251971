"""The record-mapping language, one feature at a time: paths, alternatives, const and
default, null_if, value maps, formats and zones, arithmetic, totals from lines, corrected
values, and the exact fast paths."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from connectors.records import (
    Builder,
    MappingContext,
    MappingKeys,
    RowError,
    RowsSpec,
    compile_stream,
)
from connectors.records.fields import amount, text
from connectors.records.paths import compile_path
from connectors.records.spec import FieldSpec
from crmsync import normalize
from crmsync.errors import ConfigError, RecordError
from crmsync.records import (
    Cart,
    CartItem,
    ConsentState,
    Customer,
    IssueAction,
    Order,
    OrderLine,
    OrderStatus,
    RecordIssue,
    Stream,
)

ISTANBUL = MappingContext(tz=ZoneInfo("Europe/Istanbul"), region="TR")
KEYS = MappingKeys.nested("sources.shop.streams.x")
CUSTOMER = {"external_id": "id"}
ORDER = {
    "external_id": "id",
    "email": "mail",
    "placed_at": {"path": "at", "timezone": "UTC"},
    "status": {"const": "paid"},
    "currency": {"default": "TRY"},
}
LINES = RowsSpec(path="items", fields={"quantity": "q", "unit_price": "p", "discount": "d"})


def customer(fields: Mapping[str, Any], raw: dict[str, Any], **context: Any) -> Customer:
    ctx = MappingContext(**{"tz": ISTANBUL.tz, **context})
    builder = compile_stream(Stream.CUSTOMERS, {**CUSTOMER, **fields}, keys=KEYS, context=ctx)
    record = builder.build({"id": 1, **raw}, [])
    assert isinstance(record, Customer)
    return record


def order(raw: dict[str, Any], fields: Mapping[str, Any] | None = None, rows: Any = LINES) -> Order:
    builder = compile_stream(Stream.ORDERS, {**ORDER, **(fields or {})}, rows, keys=KEYS)
    record = builder.build({"id": 7, "mail": "a@example.com", "at": "2025-01-02 03:04", **raw}, [])
    assert isinstance(record, Order)
    return record


# --- paths --------------------------------------------------------------------------------


def test_paths_walk_objects_index_lists_and_pick_by_a_key() -> None:
    raw = {
        "billing": {"email": "x@example.com"},
        "items": [{"sku": "A"}, {"sku": "B"}],
        "meta_data": [{"key": "colour", "value": "red"}, {"key": "a.b", "value": "dotted"}],
        "odd.key": "as written",
    }
    assert compile_path("billing.email")(raw) == "x@example.com"
    assert compile_path("items.1.sku")(raw) == "B"
    assert compile_path("items.-1.sku")(raw) == "B"
    assert compile_path("items.5.sku")(raw) is None
    assert compile_path("meta_data[key=colour].value")(raw) == "red"
    assert compile_path("meta_data[key=a.b].value")(raw) == "dotted"
    assert compile_path("meta_data[key=size].value")(raw) is None
    assert compile_path("odd.key")(raw) == "as written"  # the exact key wins
    assert compile_path("billing.email.more")(raw) is None
    assert compile_path("")(raw) is raw


def test_flat_paths_are_literal_column_names() -> None:
    row = {"Tutar [TL]": "5", "a.b": "x"}
    assert compile_path("Tutar [TL]", flat=True)(row) == "5"
    assert compile_path("a.b", flat=True)(row) == "x"
    with pytest.raises(ConfigError, match="invalid path"):
        compile_path("Tutar [TL]", key="k")


def test_paths_read_any_mapping_not_only_dicts() -> None:
    class Row(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __iter__(self) -> Any:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    record = customer({"email": "contact.email"}, {})
    assert record.email is None
    builder = compile_stream(Stream.CUSTOMERS, {"external_id": "id", "city": "c"}, keys=KEYS)
    built = builder.build(Row({"id": 3, "c": "Van"}), [])
    assert isinstance(built, Customer) and (built.external_id, built.city) == ("3", "Van")


def test_the_first_non_empty_of_several_paths_wins() -> None:
    fields = {"email": {"path": ["email", "billing.email"]}}
    assert customer(fields, {"email": "", "billing": {"email": "b@example.com"}}).email == (
        "b@example.com"
    )
    assert customer(fields, {"email": "a@example.com", "billing": {"email": "b@x.com"}}).email == (
        "a@example.com"
    )


# --- const, default, null_if, map ---------------------------------------------------------


def test_constants_and_defaults_fill_what_an_export_lacks() -> None:
    found = order({"items": [{"q": 1, "p": "5"}]})
    assert found.status is OrderStatus.PAID and found.currency == "TRY"
    assert order({"currency": "EUR", "items": [{"q": 1, "p": "5"}]}).currency == "TRY"
    given = order(
        {"cur": "eur", "items": [{"q": 1, "p": "5"}]},
        {"currency": {"path": "cur", "default": "TRY"}},
    )
    assert given.currency == "EUR"


def test_null_if_values_mean_none() -> None:
    fields = {"customer_external_id": {"path": "cid", "null_if": ["0"]}}
    assert order({"cid": 0, "items": [{"q": 1, "p": "1"}]}, fields).customer_external_id is None
    assert order({"cid": " 0 ", "items": [{"q": 1, "p": "1"}]}, fields).customer_external_id is None
    assert order({"cid": 12, "items": [{"q": 1, "p": "1"}]}, fields).customer_external_id == "12"


def test_value_maps_translate_raw_values_and_pass_others_through() -> None:
    consent = {
        "email_consent": {
            "path": "izin",
            "map": {"ONAY": "subscribed", "RET": "unsubscribed", "never": "none"},
        }
    }
    assert customer(consent, {"izin": "ONAY"}).email_consent.state is ConsentState.SUBSCRIBED  # type: ignore[union-attr]
    assert customer(consent, {"izin": "RET"}).email_consent.state is ConsentState.UNSUBSCRIBED  # type: ignore[union-attr]
    assert customer(consent, {"izin": "never"}).email_consent.state is ConsentState.NONE  # type: ignore[union-attr]
    assert customer(consent, {"izin": "yes"}).email_consent.state is ConsentState.SUBSCRIBED  # type: ignore[union-attr]
    flags = {"deleted": {"path": "gone", "map": {"true": "no", "false": "yes"}}}  # inverted flag
    assert customer(flags, {"gone": True}).deleted is False
    assert customer(flags, {"gone": False}).deleted is True


def test_an_unmapped_consent_is_no_consent_and_an_empty_one_is_none() -> None:
    assert customer({}, {}).email_consent is None
    state = customer({"email_consent": "izin"}, {"izin": ""}).email_consent
    assert state is not None and state.state is ConsentState.NONE


# --- conversions: formats, epoch, zones ---------------------------------------------------


def test_naive_times_are_read_in_the_sources_zone_or_the_fields_own() -> None:
    local = customer({"created_at": "t"}, {"t": "2025-06-01 12:00:00"})
    assert local.created_at == datetime(2025, 6, 1, 9, 0, tzinfo=UTC)  # Istanbul is +03:00
    utc = customer({"created_at": {"path": "t", "timezone": "UTC"}}, {"t": "2025-06-01 12:00:00"})
    assert utc.created_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_strptime_formats_per_field_and_per_source() -> None:
    own = customer(
        {"created_at": {"path": "t", "format": "%d.%m.%Y %H:%M"}}, {"t": "01.10.2026 10:30"}
    )
    assert own.created_at == datetime(2026, 10, 1, 7, 30, tzinfo=UTC)
    source = customer({"created_at": "t"}, {"t": "01.10.2026 10:30"}, time_format="%d.%m.%Y %H:%M")
    assert source.created_at == own.created_at
    birthday = customer({"birthday": {"path": "b", "format": "%d/%m/%Y"}}, {"b": "12/04/1990"})
    assert birthday.birthday == date(1990, 4, 12)


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch", 1741064767),
        ("epoch", "1741064767"),
        ("epoch_ms", 1741064767000),
        ("epoch_ms", "1741064767000"),
        (None, 1741064767000),
        (None, "1741064767"),
    ],
)
def test_epoch_seconds_and_milliseconds(fmt: str | None, value: object) -> None:
    spec: dict[str, Any] = {"path": "t"} if fmt is None else {"path": "t", "format": fmt}
    assert customer({"created_at": spec}, {"t": value}).created_at == datetime(
        2025, 3, 4, 5, 6, 7, tzinfo=UTC
    )


def test_an_explicit_epoch_format_refuses_what_is_not_a_number() -> None:
    builder = compile_stream(
        Stream.CUSTOMERS,
        {"external_id": "id", "created_at": {"path": "t", "format": "epoch"}},
        keys=KEYS,
    )
    with pytest.raises(RecordError, match="not an epoch time") as raised:
        builder.build({"id": 1, "t": "2025-01-01"}, [])
    assert raised.value.field == "created_at"


# --- arithmetic ---------------------------------------------------------------------------


def test_sum_over_a_list_of_a_path_or_of_a_nested_spec() -> None:
    raw = {
        "refunds": [{"total": "-2.50"}, {"total": -1}],
        "items": [{"q": 2, "p": "3.5"}, {"q": 1, "p": "4"}],
    }
    fields = {
        "refunded_total": {"path": "refunds", "sum": "total", "abs": True},
        "total": {"path": "items", "sum": {"path": "q", "times": "p"}},
    }
    found = order(raw, fields, rows=None)
    assert found.refunded_total == Decimal("3.50")
    assert found.total == Decimal("11.0")
    missing = order(
        {"items": [{"q": 1, "p": "1"}]}, {"refunded_total": {"path": "refunds", "sum": "total"}}
    )
    assert missing.refunded_total == 0


def test_times_plus_minus_per_in_that_order() -> None:
    lines = RowsSpec(
        path="items",
        fields={
            "quantity": "qty",
            "unit_price": {"path": "after", "plus": "disc", "per": "qty"},  # (after + disc) / qty
            "discount": {
                "path": "qty",
                "times": "list_price",
                "minus": ["after"],
            },  # qty × list − after
        },
    )
    found = order(
        {"items": [{"qty": 4, "after": "36", "disc": "4", "list_price": "10"}]}, rows=lines
    )
    [line] = found.lines
    assert (line.quantity, line.unit_price, line.discount) == (4, Decimal("10"), Decimal("4"))


def test_dividing_by_zero_and_missing_operands_quarantine_with_the_field() -> None:
    lines = RowsSpec(
        path="items", fields={"quantity": "q", "unit_price": {"path": "t", "per": "n"}}
    )
    builder = compile_stream(Stream.ORDERS, ORDER, lines, keys=KEYS)
    base = {"id": 1, "mail": "a@example.com", "at": "2025-01-01"}
    with pytest.raises(RowError, match="divide by zero") as raised:
        builder.build({**base, "items": [{"q": 1, "t": "5", "n": 0}]}, [])
    assert (raised.value.field, raised.value.row) == ("lines[0].unit_price", 0)
    with pytest.raises(RowError, match="missing number") as raised:
        builder.build({**base, "items": [{"q": 1, "t": "5", "n": 1}, {"q": 1, "t": "5"}]}, [])
    assert (raised.value.field, raised.value.row) == ("lines[1].unit_price", 1)


# --- totals from lines --------------------------------------------------------------------


def test_an_unmapped_total_is_computed_from_the_lines() -> None:
    items = [{"q": 2, "p": "10.00", "d": "1.50"}, {"q": 1, "p": "5"}]
    found = order({"items": items})
    assert found.total == Decimal("23.50")  # 2×10 − 1.50 + 1×5
    assert found.discount_total == Decimal("1.50")  # Σ line discounts, discount_total unmapped
    assert found.lines[1] == OrderLine(None, None, None, 1, Decimal("5"), Decimal(0))


def test_order_discount_shipping_and_tax_enter_only_a_computed_total() -> None:
    fields = {"order_discount": "coupon", "shipping": "cargo", "tax": "kdv"}
    raw = {"items": [{"q": 2, "p": "10"}], "coupon": "3", "cargo": "4.90", "kdv": "1.10"}
    found = order(raw, fields)
    assert found.total == Decimal("23.00")  # 20 − 3 + 4.90 + 1.10
    assert found.discount_total == Decimal("3")  # no line discounts, the coupon
    assert found.refunded_total == 0  # refunds are never taken off the total


def test_a_mapped_total_and_discount_are_used_as_given() -> None:
    fields = {"total": "sum", "discount_total": "disc"}
    found = order({"sum": "99", "disc": "0", "items": [{"q": 2, "p": "10", "d": "1"}]}, fields)
    assert (found.total, found.discount_total) == (Decimal("99"), Decimal("0"))


def test_an_order_without_lines_to_compute_from_is_quarantined() -> None:
    builder = compile_stream(Stream.ORDERS, ORDER, LINES, keys=KEYS)
    raw = {"id": 1, "mail": "a@example.com", "at": "2025-01-01"}
    [issue] = builder.outcome({**raw, "items": []})
    assert isinstance(issue, RecordIssue) and issue.action is IssueAction.QUARANTINED
    assert issue.field == "total" and "no lines to compute it from" in issue.reason
    [negative] = builder.outcome({**raw, "items": [{"q": 1, "p": "1", "d": "5"}]})
    assert isinstance(negative, RecordIssue) and "negative" in negative.reason


def test_a_carts_unmapped_value_is_the_sum_of_its_items() -> None:
    fields = {"external_id": "id", "email": "mail", "currency": {"const": "TRY"}}
    items = RowsSpec(path="lines", fields={"quantity": "q", "unit_price": "p", "sku": "s"})
    builder = compile_stream(Stream.CARTS, fields, items, keys=MappingKeys.nested("c", "items"))
    cart = builder.build(
        {"id": "k", "mail": "a@example.com", "lines": [{"q": 3, "p": "2.5", "s": "X"}]}, []
    )
    assert cart == Cart(
        "k",
        None,
        "a@example.com",
        "TRY",
        Decimal("7.5"),
        items=(CartItem("X", None, None, 3, Decimal("2.5")),),
    )


# --- corrected, not dropped ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "words"),
    [
        ("phone", "0532 123", "invalid phone number"),
        ("country", "Narnia", "not an ISO 3166-1"),
        ("birthday", "31.02.1990", "unparseable birthday"),
    ],
)
def test_an_invalid_optional_value_is_cleared_with_a_note(field: str, raw: str, words: str) -> None:
    builder = compile_stream(
        Stream.CUSTOMERS, {"external_id": "id", "email": "e", field: "v"}, keys=KEYS
    )
    record, issue = builder.outcome({"id": 5, "e": "a@example.com", "v": raw})
    assert isinstance(record, Customer) and getattr(record, field) is None
    assert record.email == "a@example.com"
    assert isinstance(issue, RecordIssue)
    assert (issue.action, issue.field, issue.external_id) == (IssueAction.CORRECTED, field, "5")
    assert repr(raw) in issue.reason and words in issue.reason


def test_an_invalid_email_consent_or_date_still_quarantines() -> None:
    fields = {"external_id": "id", "email": "e", "email_consent": "c", "created_at": "t"}
    builder = compile_stream(Stream.CUSTOMERS, fields, keys=KEYS)
    good = {"id": 1, "e": "a@example.com", "c": "yes", "t": "2025-01-01"}
    for bad, field in (
        ({"e": "a@@x"}, "email"),
        ({"c": "maybe"}, "email_consent"),
        ({"t": "dün"}, "created_at"),
    ):
        [issue] = builder.outcome({**good, **bad})
        assert isinstance(issue, RecordIssue) and issue.action is IssueAction.QUARANTINED
        assert issue.field == field


def test_notes_of_a_row_are_named_after_the_row() -> None:
    lines = RowsSpec(path="items", fields={"quantity": "q", "unit_price": "p", "product": "n"})
    builder = compile_stream(Stream.ORDERS, ORDER, lines, keys=KEYS)
    raw = {
        "id": 1,
        "mail": "a@example.com",
        "at": "2025-01-01",
        "items": [{"q": 1, "p": 1}, {"q": 1, "p": 1, "n": "Ç" * 300}],
    }
    record, issue = builder.outcome(raw)
    assert isinstance(record, Order) and isinstance(issue, RecordIssue)
    assert issue.field == "lines[1].product" and "truncated from 300 to 255" in issue.reason


# --- the builder's surface ----------------------------------------------------------------


def test_outcome_skips_rows_outside_since_until_before_building_them() -> None:
    builder = compile_stream(
        Stream.CUSTOMERS, {"external_id": "id", "updated_at": "u", "email": "e"}, keys=KEYS
    )
    since, until = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    bad_email = {"e": "not an address"}
    assert builder.outcome({"id": 1, "u": "2024-12-31T23:00:00Z", **bad_email}, since, until) == ()
    assert builder.outcome({"id": 1, "u": "2025-01-01T00:00:00Z"}, since, until) == ()
    assert builder.outcome({"id": 1, "u": "2025-02-01T00:00:01Z"}, since, until) == ()
    [record] = builder.outcome({"id": 1, "u": "2025-02-01T00:00:00Z"}, since, until)
    assert isinstance(record, Customer)


def test_issues_carry_the_raw_id_and_a_short_json_excerpt() -> None:
    builder = compile_stream(Stream.CUSTOMERS, {"external_id": "id", "email": "e"}, keys=KEYS)
    [issue] = builder.outcome({"id": " 42 ", "e": "nope", "filler": "x" * 500})
    assert isinstance(issue, RecordIssue)
    assert issue.external_id == "42" and issue.reason.startswith("email: invalid e-mail")
    assert issue.excerpt.startswith('{"id":" 42 "') and len(issue.excerpt) == 203
    [nothing] = builder.outcome(["not", "an", "object"])
    assert isinstance(nothing, RecordIssue) and nothing.external_id is None


def test_source_names_label_issues_with_the_sources_own_columns() -> None:
    ctx = MappingContext(source_names=True, flat=True)
    keys = MappingKeys("x.columns", "x.line_columns", "x.lines", None)
    lines = RowsSpec(path="", fields={"quantity": "Adet", "unit_price": "Fiyat"})
    fields = {
        "external_id": "No",
        "email": "Mail",
        "placed_at": "Tarih",
        "status": "Durum",
        "currency": {"const": "TRY"},
    }
    builder = compile_stream(Stream.ORDERS, fields, lines, keys=keys, context=ctx)
    head = {"No": "1", "Mail": "a@example.com", "Tarih": "2025-01-01", "Durum": "paid"}
    with pytest.raises(RowError) as raised:
        builder.build(head, [], rows=[{"Adet": "1", "Fiyat": "2"}, {"Adet": "-1", "Fiyat": "2"}])
    assert (raised.value.field, raised.value.row) == ("Adet", 1)
    with pytest.raises(RecordError) as raised_head:
        builder.build({**head, "Durum": "kayıp"}, [], rows=[])
    assert raised_head.value.field == "Durum"


def test_a_builder_is_one_flat_sequence_of_steps() -> None:
    builder = compile_stream(
        Stream.CUSTOMERS,
        {"external_id": "id", "email": "e", "city": "c", "updated_at": "u"},
        keys=KEYS,
    )
    assert isinstance(builder, Builder)
    layout = builder._layout
    assert [position for position, _ in layout] == [0, 1, 5]  # updated_at is read apart
    assert all(callable(step) for _, step in layout)


# --- exact fast paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Ayşe",
        " Ayşe ",
        "Ayşe  Yılmaz",
        "a\tb",
        "e\u0301",
        "x" * 300,
        "İBRAHİM",
        "",
        "   ",
        "a\u00a0b",
        "\u2028x",
    ],
)
def test_the_text_fast_path_equals_normalize_text(value: str) -> None:
    fast, slow = [], []
    convert = text(FieldSpec(path="x"), MappingContext(), "first_name")
    assert convert(value, fast) == normalize.text(value, "first_name", notes=slow)
    assert fast == slow


@pytest.mark.parametrize(
    "value", ["12.50", "-3", "1.", ".5", "-0", "1.234,50", "1,5", " 7 ", "1e3", "٣", "1_000"]
)
def test_the_amount_fast_path_equals_normalize_money(value: str) -> None:
    def outcome(function: Any) -> Any:
        try:
            return function(value, "total", allow_negative=True)
        except RecordError as exc:
            return exc.reason

    assert outcome(amount) == outcome(normalize.money)
    if not value.startswith("-"):
        assert outcome(lambda v, f, allow_negative: amount(v, f)) == outcome(
            lambda v, f, allow_negative: normalize.money(v, f)
        )
