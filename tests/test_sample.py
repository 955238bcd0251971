"""The sample store generator: deterministic, realistic in shape, streamed, and dirty on demand."""

from __future__ import annotations

import csv
import filecmp
import re
import statistics
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest

from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.records import Cart, ConsentState, Customer, Order, OrderStatus, Record
from crmsync.sample import BUNDLED_SPEC, SampleSpec, items, iter_store, write_files
from crmsync.sample.export import phone_spelling
from crmsync.sample.vocab import CATEGORIES, ascii_fold, turkish_lower, turkish_upper

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SPEC = SampleSpec(customers=3000, seed=11, now=NOW)
RESERVED = re.compile(r"^[a-z0-9._]+@example\.(com|org|net)$")
CHECKOUT = re.compile(r"^https://shop\.example\.com/checkout/[0-9a-f]{24}$")


@pytest.fixture(scope="module")
def store() -> list[Record]:
    return list(iter_store(SPEC))


def by_type(records: list[Record]) -> tuple[list[Customer], list[Order], list[Cart]]:
    customers = [r for r in records if isinstance(r, Customer)]
    orders = [r for r in records if isinstance(r, Order)]
    carts = [r for r in records if isinstance(r, Cart)]
    return customers, orders, carts


def test_same_spec_writes_byte_identical_files(tmp_path: Path) -> None:
    spec = SampleSpec(customers=300, seed=3, now=NOW, dirty_rate=0.05)
    first = write_files(spec, tmp_path / "a")
    second = write_files(spec, tmp_path / "b")
    assert set(first) == {"customers", "orders", "carts"}
    for stream, path in first.items():
        assert path.read_bytes() == second[stream].read_bytes(), stream
        assert path.stat().st_size > 0


def test_a_different_seed_gives_a_different_store() -> None:
    one = list(islice(iter_store(replace(SPEC, seed=1)), 50))
    two = list(islice(iter_store(replace(SPEC, seed=2)), 50))
    assert one != two


def test_bundled_sample_data_is_exactly_what_the_generator_writes(tmp_path: Path) -> None:
    written = write_files(BUNDLED_SPEC, tmp_path)
    for path in written.values():
        bundled = ROOT / "sample_data" / path.name
        assert filecmp.cmp(path, bundled, shallow=False), f"sample_data/{path.name} drifted"
    total = sum((ROOT / "sample_data" / p.name).stat().st_size for p in written.values())
    assert total < 3 * 1024 * 1024


def test_each_order_and_cart_comes_after_its_customer(store: list[Record]) -> None:
    seen: set[str] = set()
    guests = 0
    for record in store:
        if isinstance(record, Customer):
            seen.add(record.external_id)
        elif record.customer_external_id is None:
            guests += 1
            assert record.email is not None  # a guest checkout carries its e-mail
        else:
            assert record.customer_external_id in seen
    assert guests > 0


def test_iter_store_streams_in_flat_memory() -> None:
    big = SampleSpec(customers=1_000_000, now=NOW)
    stream = iter_store(big)
    assert isinstance(stream, Iterator)
    tracemalloc.start()
    try:
        for _ in islice(stream, 8_000):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # keeping these 8,000 records would take about 5 MB; streaming holds under 100 KB
    assert peak < 1024 * 1024


def test_orders_average_the_spec_and_are_skewed(store: list[Record]) -> None:
    customers, orders, _ = by_type(store)
    per_customer = Counter(o.customer_external_id for o in orders if o.customer_external_id)
    counts = [per_customer.get(c.external_id, 0) for c in customers]
    assert 4.4 <= statistics.mean(counts) <= 5.6
    ones = sum(1 for n in counts if n == 1)
    assert ones > 0.2 * len(counts)  # many one-time buyers...
    assert max(counts) >= 30  # ...and some heavy ones
    assert statistics.median(counts) < statistics.mean(counts)


def test_order_statuses_refunds_and_discounts_are_mixed(store: list[Record]) -> None:
    _, orders, _ = by_type(store)
    status = Counter(o.status for o in orders)
    assert 0.035 <= status[OrderStatus.CANCELLED] / len(orders) <= 0.065
    refunded = [o for o in orders if o.refunded_total > 0]
    assert 0.02 <= len(refunded) / len(orders) <= 0.04
    assert any(o.refunded_total == o.total and o.status is OrderStatus.REFUNDED for o in refunded)
    assert any(0 < o.refunded_total < o.total for o in refunded)
    discounted = [o for o in orders if o.discount_total > 0]
    assert 0.1 <= len(discounted) / len(orders) <= 0.5
    by_customer: dict[str | None, list[Order]] = defaultdict(list)
    for o in orders:
        by_customer[o.customer_external_id].append(o)
    deal_hunters = [
        cid for cid, os in by_customer.items() if len(os) >= 3 and all(o.discount_total for o in os)
    ]
    assert deal_hunters


def test_order_amounts_add_up(store: list[Record]) -> None:
    _, orders, _ = by_type(store)
    for o in orders:
        gross = sum((line.unit_price * line.quantity for line in o.lines), Decimal(0))
        assert o.discount_total == sum((line.discount for line in o.lines), Decimal(0))
        assert o.total == gross - o.discount_total
        assert o.currency == "TRY"
        assert o.total > 0
        assert o.updated_at is not None and o.placed_at <= o.updated_at <= NOW
        assert all(line.quantity > 0 and line.sku for line in o.lines)


def test_prices_are_realistic_lira_per_category(store: list[Record]) -> None:
    ranges = {name: (low, high) for name, _, _, _, bases in CATEGORIES for _, low, high in bases}
    _, orders, _ = by_type(store)
    prices: dict[str, list[Decimal]] = defaultdict(list)
    for o in orders:
        for line in o.lines:
            assert line.category in ranges
            prices[line.category or ""].append(line.unit_price)
    assert set(prices) == {name for name, *_ in CATEGORIES}
    assert statistics.median(prices["Elektronik"]) > statistics.median(prices["Süpermarket"])
    assert all(str(p).endswith((".90", ".99")) for ps in prices.values() for p in ps)


def test_consent_mix_and_timestamps(store: list[Record]) -> None:
    customers, _, _ = by_type(store)
    with_email = [c for c in customers if c.email]
    email = Counter(c.email_consent.state for c in with_email if c.email_consent)
    assert 0.50 <= email[ConsentState.SUBSCRIBED] / len(with_email) <= 0.60
    assert 0.12 <= email[ConsentState.UNSUBSCRIBED] / len(with_email) <= 0.18
    sms = Counter(c.sms_consent.state for c in customers if c.sms_consent and c.phone)
    assert sms[ConsentState.SUBSCRIBED] < email[ConsentState.SUBSCRIBED]
    assert sms[ConsentState.SUBSCRIBED] > 0 and sms[ConsentState.UNSUBSCRIBED] > 0
    for c in customers:
        for consent in (c.email_consent, c.sms_consent):
            assert consent is not None
            has_time = consent.at is not None
            assert has_time == (consent.state is not ConsentState.NONE)
            if consent.at is not None:
                assert c.created_at is not None and c.created_at <= consent.at <= NOW


def test_customers_look_turkish_and_use_reserved_domains(store: list[Record]) -> None:
    customers, _, _ = by_type(store)
    assert all(c.country == "TR" and c.city and c.region for c in customers)
    letters = set("".join(f"{c.first_name}{c.last_name}" for c in customers))
    assert set("İışğüöçŞÇÖÜ") <= letters
    emails = [c.email for c in customers if c.email]
    assert 0.95 <= len(emails) / len(customers) < 1
    assert all(RESERVED.match(e) for e in emails), [e for e in emails if not RESERVED.match(e)][:3]
    assert len(set(emails)) == len(emails)
    for c in customers:
        if c.email:
            local = c.email.split("@")[0]
            assert ascii_fold(c.last_name or "") in local
    assert 0.65 <= sum(1 for c in customers if c.birthday) / len(customers) <= 0.75
    assert any(c.deleted for c in customers)
    assert all(
        c.created_at and c.updated_at and c.created_at <= c.updated_at <= NOW for c in customers
    )


def test_phones_are_unique_turkish_mobiles(store: list[Record]) -> None:
    customers, _, _ = by_type(store)
    phones = [c.phone for c in customers if c.phone]
    assert 0.8 <= len(phones) / len(customers) <= 0.9
    assert len(set(phones)) == len(phones)
    for phone in phones[:200]:
        assert re.fullmatch(r"\+905\d{9}", phone)
        assert normalize.phone(phone) == phone


@pytest.mark.parametrize("style", [0, 100, 150, 200, 230, 250])
def test_every_export_phone_spelling_normalises_back(style: int) -> None:
    spelled = phone_spelling("+905321234567", style)
    assert normalize.phone(spelled) == "+905321234567"


def test_export_uses_mixed_raw_phone_spellings(tmp_path: Path) -> None:
    path = write_files(SampleSpec(customers=400, now=NOW), tmp_path)["customers"]
    with path.open(encoding="utf-8", newline="") as handle:
        phones = [row["phone"] for row in csv.DictReader(handle) if row["phone"]]
    assert any(re.fullmatch(r"0\d{3} \d{3} \d{2} \d{2}", p) for p in phones)
    assert any(re.fullmatch(r"\+90 \d{3} \d{7}", p) for p in phones)
    assert any(re.fullmatch(r"5\d{9}", p) for p in phones)


def test_carts_are_converted_or_abandoned_at_realistic_ages(store: list[Record]) -> None:
    _, _, carts = by_type(store)
    converted = [c for c in carts if c.converted]
    open_carts = [c for c in carts if not c.converted]
    assert converted and open_carts
    ages = [NOW - c.updated_at for c in open_carts if c.updated_at]
    assert min(ages) < timedelta(hours=6)
    assert max(ages) > timedelta(days=7)
    for c in carts:
        assert c.checkout_url and CHECKOUT.match(c.checkout_url)
        assert c.value == sum((i.unit_price * i.quantity for i in c.items), Decimal(0))
        assert c.items and c.currency == "TRY"
    assert len({c.checkout_url for c in carts}) == len(carts)


def test_orders_per_customer_zero_means_no_orders() -> None:
    records = list(iter_store(SampleSpec(customers=200, now=NOW, orders_per_customer=0)))
    assert all(not isinstance(r, Order) for r in records)
    assert sum(isinstance(r, Customer) for r in records) == 200


def test_dirty_rows_are_extra_and_leave_the_clean_store_unchanged() -> None:
    clean = list(iter_store(replace(SPEC, customers=500)))
    dirty = list(iter_store(replace(SPEC, customers=500, dirty_rate=0.05)))
    extra = [r for r in dirty if r.external_id.startswith("9000")]
    assert extra
    assert [r for r in dirty if not r.external_id.startswith("9000")] == clean


def test_dirty_export_holds_every_kind_of_mistake(tmp_path: Path) -> None:
    paths = write_files(SampleSpec(customers=600, now=NOW, dirty_rate=0.05), tmp_path)
    with paths["customers"].open(encoding="utf-8", newline="") as handle:
        customers = list(csv.DictReader(handle))
    orders = [orjson.loads(line) for line in paths["orders"].read_bytes().splitlines()]

    def fails(check: Callable[[Any, str], object], value: object) -> bool:
        try:
            check(value, "x")
        except RecordError:
            return True
        return False

    assert any(fails(normalize.email, c["email"]) for c in customers)
    assert any(c["customer_id"] == "" for c in customers)
    assert any(fails(normalize.timestamp, c["created_at"]) for c in customers)
    assert any(len(c["first_name"]) >= 10_000 for c in customers)
    emails = Counter(
        normalize.email(c["email"]) for c in customers if not fails(normalize.email, c["email"])
    )
    assert any(n == 2 for e, n in emails.items() if e)
    assert any("İ" in c["email"] and "İ" in c["first_name"] for c in customers)
    assert any(o["id"] is None for o in orders)
    assert any(line["quantity"] < 0 for o in orders for line in o["line_items"])
    assert any(fails(normalize.currency, o["currency"]) for o in orders)
    assert any(fails(normalize.timestamp, o["created_at"]) for o in orders)


def test_repairable_dirty_rows_come_out_repaired() -> None:
    spec = SampleSpec(customers=600, now=NOW, dirty_rate=0.05)
    shouty = [
        i.record
        for i in items(spec)
        if i.raw is not None and i.record is not None and "İ" in str(i.raw.get("email"))
    ]
    assert shouty
    for record in shouty:
        assert isinstance(record, Customer) and record.email
        assert record.email == record.email.lower() and record.email.isascii()
    long_names = [
        r for r in iter_store(spec) if isinstance(r, Customer) and r.external_id.startswith("9000")
    ]
    assert all(len(r.first_name or "") <= normalize.MAX_TEXT for r in long_names)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"now": datetime(2026, 11, 1)}, "timezone-aware"),
        ({"customers": -1}, "customers"),
        ({"orders_per_customer": -0.5}, "orders_per_customer"),
        ({"dirty_rate": 1.5}, "dirty_rate"),
    ],
)
def test_spec_refuses_impossible_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SampleSpec(**kwargs)  # type: ignore[arg-type]


def test_turkish_case_rules() -> None:
    assert turkish_upper("ibrahim ılgaz") == "İBRAHİM ILGAZ"
    assert turkish_lower("İBRAHİM ILGAZ") == "ibrahim ılgaz"
    assert ascii_fold("Ayşe Yılmaz Çağrı Güneş Öztürk") == "ayse yilmaz cagri gunes ozturk"
