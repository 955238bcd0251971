"""One mapping, three ways to fetch the rows: a platform shaped unlike any preset (Turkish
field names, epoch times, a consent spelt ONAY/RET/never, orders without status, currency
or totals, their amounts only in nested lines) read from a CSV export, a JSON-lines
export and a REST API through the same field specs gives the same records; and a bad
phone no longer keeps a customer with a valid e-mail out of staging."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import respx
import sqlalchemy as sa

from connectors.files import FilesSource
from connectors.rest import RestSource
from crmsync.contract import ConnectorContext
from crmsync.records import (
    Consent,
    ConsentState,
    Customer,
    IssueAction,
    Order,
    OrderLine,
    OrderStatus,
    Record,
    RecordIssue,
    Stream,
)
from engine.pull import pull_source
from state import schema
from state.store import Store

BASE = "https://pazar.example.test"
UNTIL = datetime(2030, 1, 1, tzinfo=UTC)
CONTEXT = ConnectorContext("pazar", Path("."), default_region="TR", timezone="Europe/Istanbul")

# The mapping, written once and given to every source.
CUSTOMER_FIELDS: dict[str, Any] = {
    "external_id": "Müşteri No",
    "email": "E-posta",
    "phone": "Cep",
    "first_name": "Ad",
    "city": "İl",
    "birthday": {"path": "Doğum Tarihi", "format": "%d.%m.%Y"},
    "created_at": {"path": "Kayıt", "format": "epoch"},
    "updated_at": {"path": "Güncelleme", "format": "epoch_ms"},
    "email_consent": {
        "path": "İzin",
        "map": {"ONAY": "subscribed", "RET": "unsubscribed", "never": "none"},
    },
}
ORDER_FIELDS: dict[str, Any] = {
    "external_id": "Sipariş No",
    "customer_external_id": {"path": "Müşteri No", "null_if": ["0"]},
    "email": "E-posta",
    "placed_at": {"path": "Zaman", "format": "epoch_ms"},
    "status": {"const": "paid"},
    "currency": {"default": "TRY"},
    "shipping": "Kargo",
}
LINE_FIELDS: dict[str, Any] = {
    "sku": "Kod",
    "quantity": "Adet",
    "unit_price": {"path": "Tutar", "plus": "İndirim", "per": "Adet"},  # Tutar is discounted
    "discount": "İndirim",
}

CUSTOMERS = [
    {"Müşteri No": "1", "E-posta": "Ayse@Example.com", "Cep": "0532 111 22 33", "Ad": "Ayşe",
     "İl": "İzmir", "Doğum Tarihi": "12.04.1990", "Kayıt": 1741064767,
     "Güncelleme": 1741064767000, "İzin": "ONAY"},
    {"Müşteri No": "2", "E-posta": "kerem@example.org", "Cep": "0532 123", "Ad": "Kerem",
     "İl": "", "Doğum Tarihi": "", "Kayıt": 1741064767, "Güncelleme": 1741064768000,
     "İzin": "never"},
    {"Müşteri No": "3", "E-posta": "", "Cep": "05441234567", "Ad": "Işıl", "İl": "Van",
     "Doğum Tarihi": "31.02.1990", "Kayıt": 1741064767, "Güncelleme": 1741064769000,
     "İzin": "RET"},
]  # fmt: skip
ORDERS = [
    {"Sipariş No": "S-1", "Müşteri No": "1", "E-posta": "ayse@example.com",
     "Zaman": 1741064767000, "Kargo": "29.90",
     "Kalemler": [{"Kod": "ÇAY-1", "Adet": 2, "Tutar": "90.00", "İndirim": "10.00"},
                  {"Kod": "KHV-2", "Adet": 1, "Tutar": "45.50", "İndirim": ""}]},
    {"Sipariş No": "S-2", "Müşteri No": "0", "E-posta": "misafir@example.net",
     "Zaman": 1741064800000, "Kargo": "",
     "Kalemler": [{"Kod": "ÇAY-1", "Adet": 1, "Tutar": "50", "İndirim": "0"}]},
]  # fmt: skip


def expected_records() -> tuple[list[Customer], list[Order]]:
    at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    customers = [
        Customer("1", "ayse@example.com", "+905321112233", "Ayşe", city="İzmir",
                 birthday=date(1990, 4, 12), created_at=at, updated_at=at,
                 email_consent=Consent(ConsentState.SUBSCRIBED)),
        Customer("2", "kerem@example.org", None, "Kerem", created_at=at,
                 updated_at=at + timedelta(seconds=1), email_consent=Consent(ConsentState.NONE)),
        Customer("3", None, "+905441234567", "Işıl", city="Van", created_at=at,
                 updated_at=at + timedelta(seconds=2),
                 email_consent=Consent(ConsentState.UNSUBSCRIBED)),
    ]  # fmt: skip
    orders = [
        Order("S-1", "1", "ayse@example.com", at, OrderStatus.PAID, "TRY",
              total=Decimal("165.40"), discount_total=Decimal("10.00"),
              lines=(OrderLine("ÇAY-1", None, None, 2, Decimal("50"), Decimal("10.00")),
                     OrderLine("KHV-2", None, None, 1, Decimal("45.50"), Decimal(0)))),
        Order("S-2", None, "misafir@example.net", at + timedelta(seconds=33), OrderStatus.PAID,
              "TRY", total=Decimal("50"), discount_total=Decimal("0"),
              lines=(OrderLine("ÇAY-1", None, None, 1, Decimal("50"), Decimal("0")),)),
    ]  # fmt: skip
    return customers, orders


def split(items: list[Any]) -> tuple[list[Record], list[RecordIssue]]:
    return (
        [i for i in items if not isinstance(i, RecordIssue)],
        [i for i in items if isinstance(i, RecordIssue)],
    )


def write_exports(folder: Path) -> None:
    with (folder / "musteriler.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CUSTOMERS[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(CUSTOMERS)
    (folder / "siparisler.jsonl").write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in ORDERS))
    head = [k for k in ORDERS[0] if k != "Kalemler"]
    with (folder / "siparis_kalemleri.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*head, *LINE_FIELDS_COLUMNS])
        writer.writeheader()
        for order in ORDERS:  # one row per line, the order's own columns repeated
            for line in order["Kalemler"]:
                writer.writerow({**{k: order[k] for k in head}, **line})


LINE_FIELDS_COLUMNS = ["Kod", "Adet", "Tutar", "İndirim"]


def files_source(folder: Path, orders_file: str) -> FilesSource:
    config = {
        "kind": "files",
        "customers": {
            "path": "musteriler.csv",
            "delimiter": ";",
            "default_columns": False,
            "columns": CUSTOMER_FIELDS,
        },
        "orders": {
            "path": orders_file,
            "default_columns": False,
            "columns": ORDER_FIELDS,
            "lines": "Kalemler",
            "line_columns": LINE_FIELDS,
        },
    }
    return FilesSource(config, ConnectorContext("pazar", folder, timezone="Europe/Istanbul"))


def rest_source() -> RestSource:
    streams = {
        "customers": {"path": "/api/musteriler", "pagination": {"type": "none"},
                      "fields": CUSTOMER_FIELDS},
        "orders": {"path": "/api/siparisler", "pagination": {"type": "none"},
                   "fields": ORDER_FIELDS, "lines": {"path": "Kalemler", "fields": LINE_FIELDS}},
    }  # fmt: skip
    return RestSource({"kind": "rest", "base_url": BASE, "streams": streams}, CONTEXT)


def read_rest(stream: Stream) -> list[Any]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/api/musteriler").respond(200, json=CUSTOMERS)
        mock.get("/api/siparisler").respond(200, json=ORDERS)
        return list(rest_source().read(stream, None, UNTIL))


def test_files_and_rest_read_the_same_platform_into_the_same_records(tmp_path: Path) -> None:
    write_exports(tmp_path)
    customers, orders = expected_records()
    from_csv, csv_notes = split(
        list(files_source(tmp_path, "x.jsonl").read(Stream.CUSTOMERS, None, UNTIL))
    )
    from_rest, rest_notes = split(read_rest(Stream.CUSTOMERS))
    assert from_csv == from_rest == customers
    for orders_file in ("siparisler.jsonl", "siparis_kalemleri.csv"):
        found = list(files_source(tmp_path, orders_file).read(Stream.ORDERS, None, UNTIL))
        assert found == orders, orders_file
    assert read_rest(Stream.ORDERS) == orders
    # the corrections are the same, each named as its source names the field
    assert [(i.external_id, i.field) for i in csv_notes] == [("2", "Cep"), ("3", "Doğum Tarihi")]
    assert [(i.external_id, i.field) for i in rest_notes] == [("2", "phone"), ("3", "birthday")]
    for note in (*csv_notes, *rest_notes):
        assert note.action is IssueAction.CORRECTED
        assert "'0532 123'" in note.reason or "'31.02.1990'" in note.reason


def test_a_bad_line_names_its_csv_line_its_json_index_and_its_rest_row(tmp_path: Path) -> None:
    bad = [
        {**ORDERS[0], "Kalemler": [ORDERS[0]["Kalemler"][0], {"Kod": "X", "Adet": 0, "Tutar": "1"}]}
    ]
    (tmp_path / "o.jsonl").write_bytes(orjson.dumps(bad[0]) + b"\n")
    [json_issue] = files_source(tmp_path, "o.jsonl").read(Stream.ORDERS, None, UNTIL)
    assert isinstance(json_issue, RecordIssue)
    assert (json_issue.field, json_issue.reason[:7]) == ("Kalemler[1].Adet", "line 1:")
    head = [k for k in ORDERS[0] if k != "Kalemler"]
    with (tmp_path / "o.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*head, *LINE_FIELDS_COLUMNS])
        writer.writeheader()
        for line in bad[0]["Kalemler"]:
            writer.writerow({**{k: bad[0][k] for k in head}, "İndirim": "", **line})
    [csv_issue] = files_source(tmp_path, "o.csv").read(Stream.ORDERS, None, UNTIL)
    assert isinstance(csv_issue, RecordIssue)
    assert (csv_issue.field, csv_issue.reason[:7]) == ("Adet", "line 3:")
    with respx.mock(base_url=BASE) as mock:
        mock.get("/api/siparisler").respond(200, json=bad)
        [rest_issue] = rest_source().read(Stream.ORDERS, None, UNTIL)
    assert isinstance(rest_issue, RecordIssue) and rest_issue.field == "lines[1].quantity"
    assert {i.external_id for i in (json_issue, csv_issue, rest_issue)} == {"S-1"}


def test_a_bad_phone_is_cleared_and_the_customer_staged_with_a_corrected_note(
    tmp_path: Path, state_url: str
) -> None:
    """Issue 9: one unparseable phone kept a customer with a valid e-mail out of every
    destination. Now the customer is staged without the phone, and `status` shows why."""
    write_exports(tmp_path)
    store = Store(state_url)
    try:
        source = files_source(tmp_path, "siparisler.jsonl")
        stats = pull_source(store, "pazar", source, until=UTC_NOW, lookback=timedelta(0))
        assert stats.streams["customers"].quarantined == 0
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(schema.customers.c.external_id, schema.customers.c.email,
                          schema.customers.c.phone).order_by(schema.customers.c.external_id)
            ).all()  # fmt: skip
        assert [tuple(r) for r in rows] == [
            ("1", "ayse@example.com", "+905321112233"),
            ("2", "kerem@example.org", None),  # staged, its phone cleared
            ("3", None, "+905441234567"),
        ]
        notes = {(q["external_id"], q["field"]): q for q in store.quarantine(["pazar"])}
        phone = notes[("2", "Cep")]
        assert phone["action"] == "corrected"
        assert "'0532 123'" in phone["reason"] and "invalid phone number" in phone["reason"]
        assert notes[("3", "Doğum Tarihi")]["action"] == "corrected"
    finally:
        store.close()


UTC_NOW = datetime(2026, 1, 1, tzinfo=UTC)
