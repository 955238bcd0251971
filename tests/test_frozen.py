"""``quick_init``: a frozen slotted dataclass built by a faster ``__init__`` is the same
record, by position or keyword, with its defaults, and stays frozen; so are the records,
changes and ledger rows that use it."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import InitVar, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from crmsync import records
from crmsync.contract import Action, Change, ConsentIntent
from crmsync.diff import Acked
from crmsync.frozen import quick_init
from crmsync.records import Cart, CartItem, Consent, ConsentState, Customer, Order, OrderLine

AT = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


@quick_init
@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    count: int = 3
    seen: list[str] = field(default_factory=list)


def test_fields_are_set_by_position_and_keyword_with_their_defaults() -> None:
    assert (Sample("a").name, Sample("a").count, Sample("a").seen) == ("a", 3, [])
    assert Sample("a", 4, ["x"]) == Sample(seen=["x"], count=4, name="a")
    assert Sample("a").seen is not Sample("a").seen  # a fresh value from the factory
    with pytest.raises(TypeError, match="name"):
        Sample()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Sample("a", 1, [], "extra")  # type: ignore[call-arg]


def test_a_quickly_built_record_stays_frozen_hashable_and_picklable() -> None:
    line = OrderLine("SKU-1", "Kitap", "Kitap", 2, Decimal("10.50"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        line.quantity = 3  # type: ignore[misc]
    assert line.discount == Decimal(0)
    assert hash(line) == hash(OrderLine("SKU-1", "Kitap", "Kitap", 2, Decimal("10.50")))
    assert pickle.loads(pickle.dumps(line)) == line
    assert repr(line).startswith("OrderLine(sku='SKU-1', product='Kitap'")


# every record class with every field given by keyword: each reads back as given
GIVEN: dict[type, dict[str, Any]] = {
    Consent: {"state": ConsentState.SUBSCRIBED, "at": AT},
    Customer: {
        "external_id": "c1",
        "email": "a@example.com",
        "phone": "+905321112233",
        "first_name": "Ayşe",
        "last_name": "Yılmaz",
        "city": "İzmir",
        "region": "Karşıyaka",
        "country": "TR",
        "postal_code": "35000",
        "address1": "Cumhuriyet Cd. 1",
        "language": "tr",
        "birthday": date(1990, 5, 17),
        "created_at": AT,
        "updated_at": AT,
        "email_consent": Consent(ConsentState.SUBSCRIBED, AT),
        "sms_consent": Consent(ConsentState.UNSUBSCRIBED),
        "deleted": True,
    },
    OrderLine: {
        "sku": "S",
        "product": "P",
        "category": "C",
        "quantity": 2,
        "unit_price": Decimal("9.90"),
        "discount": Decimal("1.00"),
    },
    Order: {
        "external_id": "o1",
        "customer_external_id": "c1",
        "email": "a@example.com",
        "placed_at": AT,
        "status": records.OrderStatus.REFUNDED,
        "currency": "TRY",
        "total": Decimal("19.80"),
        "discount_total": Decimal("2.00"),
        "refunded_total": Decimal("19.80"),
        "updated_at": AT,
        "lines": (OrderLine("S", "P", "C", 2, Decimal("9.90")),),
        "fulfilled_at": AT,
        "cancelled_at": None,
        "refunded_at": AT,
    },
    CartItem: {
        "sku": "S",
        "product": "P",
        "category": "C",
        "quantity": 1,
        "unit_price": Decimal("5"),
    },
    Cart: {
        "external_id": "k1",
        "customer_external_id": "c1",
        "email": None,
        "currency": "TRY",
        "value": Decimal("5"),
        "created_at": AT,
        "updated_at": AT,
        "checkout_url": "https://shop.example.com/checkout/k1",
        "converted": True,
        "items": (CartItem("S", "P", "C", 1, Decimal("5")),),
    },
    Change: {
        "person_key": "e:a@example.com",
        "action": Action.UPSERT,
        "is_new": False,
        "email": "a@example.com",
        "phone": None,
        "fields": {"FNAME": "Ayşe"},
        "memberships_add": ("crm-vip",),
        "memberships_remove": ("crm-new",),
        "email_intent": ConsentIntent.SUBSCRIBE_IF_NEW,
        "sms_intent": ConsentIntent.LEAVE,
        "payload_hash": "0" * 32,
        "remote_id": "abc",
        "memberships": ("crm-vip",),
        "email_consent_at": AT,
        "sms_consent_at": None,
        "resent": True,
    },
    Acked: {
        "payload_hash": "0" * 32,
        "memberships": ("crm-vip",),
        "remote_id": "abc",
        "status": "synced",
        "acked_at": 1_700_000_000_000,
        "payload": None,
    },
}


@pytest.mark.parametrize("cls", list(GIVEN), ids=lambda cls: cls.__name__)
def test_every_record_reads_back_what_it_was_given(cls: type) -> None:
    given = GIVEN[cls]
    assert [f.name for f in dataclasses.fields(cls)] == list(given)  # every field is given
    assert cls.__init__.__code__.co_filename == f"<quick_init {cls.__name__}>"
    by_keyword, by_position = cls(**given), cls(*given.values())
    assert by_keyword == by_position
    assert {name: getattr(by_keyword, name) for name in given} == given
    assert pickle.loads(pickle.dumps(by_keyword)) == by_keyword  # Change: via __init__ again


@pytest.mark.parametrize("cls", list(GIVEN), ids=lambda cls: cls.__name__)
def test_every_record_left_to_its_defaults_has_the_dataclass_defaults(cls: type) -> None:
    required = {
        f.name: GIVEN[cls][f.name]
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    record = cls(**required)
    for f in dataclasses.fields(cls):
        if f.name in required:
            continue
        expected = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert getattr(record, f.name) == expected, f.name


def test_a_class_it_cannot_build_right_is_refused() -> None:
    @dataclass(slots=True)
    class Thawed:
        name: str

    @dataclass(frozen=True, slots=True)
    class Checked:
        name: str

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Given:
        name: str
        extra: InitVar[int] = 0

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Named:
        name: str

    @dataclass(frozen=True)
    class Unslotted:
        name: str

    for cls in (Thawed, Checked, Given, Named, Unslotted):
        with pytest.raises(TypeError):
            quick_init(cls)
