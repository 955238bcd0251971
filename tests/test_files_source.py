"""The files source: mapping, formats, incremental reads, flat memory and the bad-input corpus."""

from __future__ import annotations

import csv
import gzip
import inspect
import os
import tracemalloc
from collections import defaultdict
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from connectors.files import FilesSource
from connectors.files_config import FilesSourceConfig
from crmsync import registry
from crmsync.contract import ConnectorContext, Source, Versioned
from crmsync.errors import ConfigError
from crmsync.records import (
    Cart,
    ConsentState,
    Customer,
    IssueAction,
    Order,
    OrderStatus,
    Record,
    RecordIssue,
    Stream,
)
from crmsync.sample import BUNDLED_SPEC, items

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "bad_input"
UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


def source(config: dict[str, Any], base: Path, name: str = "shop") -> FilesSource:
    return FilesSource({"kind": "files", **config}, ConnectorContext(name=name, config_dir=base))


def read_all(src: FilesSource, stream: Stream, since: datetime | None = None) -> list[Any]:
    return list(src.read(stream, since, UNTIL))


def split(found: list[Any]) -> tuple[list[Record], list[RecordIssue]]:
    return (
        [x for x in found if not isinstance(x, RecordIssue)],
        [x for x in found if isinstance(x, RecordIssue)],
    )


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- the bundled sample, through the default mapping -------------------------------------


def test_default_mapping_reads_the_bundled_sample_as_the_generator_made_it() -> None:
    src = source(
        {
            "customers": {"path": "sample_data/customers.csv"},
            "orders": {"path": "sample_data/orders.jsonl"},
            "carts": {"path": "sample_data/carts.jsonl"},
        },
        ROOT,
    )
    assert all(check.ok for check in src.check())
    expected: dict[Stream, list[Record]] = defaultdict(list)
    refused: dict[Stream, int] = defaultdict(int)
    for item in items(BUNDLED_SPEC):
        if item.record is None:
            refused[item.stream] += 1
        else:
            expected[item.stream].append(item.record)
    for stream in src.streams():
        records, issues = split(read_all(src, stream))
        assert records == expected[stream], stream
        quarantined = [i for i in issues if i.action is IssueAction.QUARANTINED]
        assert len(quarantined) == refused[stream], stream
        assert all(i.reason.startswith("line ") and i.field for i in quarantined)
    assert refused[Stream.CUSTOMERS] and refused[Stream.ORDERS]


def test_files_source_is_registered_and_satisfies_the_protocol() -> None:
    assert registry.load(registry.SOURCES, "files", key="sources.x.kind") is FilesSource
    src = source({"customers": {"path": "sample_data/customers.csv"}}, ROOT)
    assert isinstance(src, Source)
    assert src.kind == "files"
    assert list(src.streams()) == [Stream.CUSTOMERS]


# --- custom shapes -----------------------------------------------------------------------


def test_custom_column_names_delimiter_and_date_format(tmp_path: Path) -> None:
    header = ["Müşteri No", "E-posta", "Ad", "Soyad", "Cep", "Kayıt", "İzin", "İzin Tarihi"]
    rows = [
        ["7", " Ayse.Yilmaz@Example.com ", "Ayşe", "Yılmaz", "0532 111 22 33",
         "01.10.2026 10:30", "yes", "02.10.2026 09:00"],
    ]  # fmt: skip
    write_csv(tmp_path / "musteriler.csv", header, rows, delimiter=";")
    src = source(
        {
            "timezone": "Europe/Istanbul",
            "customers": {
                "path": "musteriler.csv",
                "delimiter": ";",
                "date_format": "%d.%m.%Y %H:%M",
                "default_columns": False,
                "columns": {
                    "external_id": "Müşteri No",
                    "email": "E-posta",
                    "first_name": "Ad",
                    "last_name": "Soyad",
                    "phone": "Cep",
                    "created_at": "Kayıt",
                    "email_consent": "İzin",
                    "email_consent_at": "İzin Tarihi",
                },
            },
        },
        tmp_path,
    )
    [check] = src.check()
    assert check.ok, check.detail
    [record] = read_all(src, Stream.CUSTOMERS)
    assert isinstance(record, Customer)
    assert record.external_id == "7"
    assert record.email == "ayse.yilmaz@example.com"
    assert record.phone == "+905321112233"
    assert record.created_at == datetime(2026, 10, 1, 7, 30, tzinfo=UTC)  # 10:30 in Istanbul
    assert record.email_consent is not None
    assert record.email_consent.state is ConsentState.SUBSCRIBED
    assert record.email_consent.at == datetime(2026, 10, 2, 6, 0, tzinfo=UTC)
    assert record.city is None and record.sms_consent is None


def test_jsonl_with_dotted_paths_and_own_line_keys(tmp_path: Path) -> None:
    order = {
        "order": {"number": "A-1", "placed": "2026-10-01T10:00:00Z", "state": "paid"},
        "buyer": {"id": 42, "mail": "Kerem@Example.org"},
        "money": {"currency": "try", "total": 150.5},
        "items": [{"code": "KTP-1", "name": "Roman", "qty": 2, "each": "75,25"}],
    }
    (tmp_path / "o.ndjson").write_bytes(orjson.dumps(order) + b"\n")
    src = source(
        {
            "orders": {
                "path": "o.ndjson",
                "default_columns": False,
                "columns": {
                    "external_id": "order.number",
                    "customer_external_id": "buyer.id",
                    "email": "buyer.mail",
                    "placed_at": "order.placed",
                    "status": "order.state",
                    "currency": "money.currency",
                    "total": "money.total",
                },
                "lines": "items",
                "line_columns": {
                    "sku": "code",
                    "product": "name",
                    "quantity": "qty",
                    "unit_price": "each",
                },
            }
        },
        tmp_path,
    )
    [record] = read_all(src, Stream.ORDERS)
    assert isinstance(record, Order)
    assert (record.external_id, record.customer_external_id, record.email) == (
        "A-1",
        "42",
        "kerem@example.org",
    )
    assert record.status is OrderStatus.PAID and record.currency == "TRY"
    assert str(record.total) == "150.5"
    [line] = record.lines
    assert (line.sku, line.product, line.quantity, str(line.unit_price)) == (
        "KTP-1",
        "Roman",
        2,
        "75.25",
    )
    assert line.category is None and line.discount == 0


def test_csv_order_lines_are_grouped_into_orders() -> None:
    src = source(
        {"orders": {"path": "order_lines.csv", "columns": {"external_id": "order_id"}}}, CORPUS
    )
    records, issues = split(read_all(src, Stream.ORDERS))
    assert [r.external_id for r in records] == ["600001", "600003"]
    first = records[0]
    assert isinstance(first, Order)
    assert [line.sku for line in first.lines] == ["GYM-0001", "KTP-0001"]
    assert [(i.external_id, i.field, i.reason[:7]) for i in issues] == [
        ("600002", "quantity", "line 5:")
    ]


def test_gzip_files_and_byte_order_marks_are_read(tmp_path: Path) -> None:
    body = "\ufeffcustomer_id,email\n1,a@example.com\n".encode()
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(body))
    (tmp_path / "c.csv").write_bytes(body)
    for name in ("c.csv.gz", "c.csv"):
        src = source(
            {
                "customers": {
                    "path": name,
                    "default_columns": False,
                    "columns": {"external_id": "customer_id", "email": "email"},
                }
            },
            tmp_path,
        )
        [record] = read_all(src, Stream.CUSTOMERS)
        assert isinstance(record, Customer) and record.email == "a@example.com", name


def test_cart_completion_time_means_converted() -> None:
    src = source({"carts": {"path": "carts.jsonl"}}, CORPUS)
    records, _ = split(read_all(src, Stream.CARTS))
    converted = {r.external_id: r.converted for r in records if isinstance(r, Cart)}
    assert converted == {"700001": False, "700003": True, "700005": False}


# --- incremental reads --------------------------------------------------------------------


def test_incremental_reads_take_rows_changed_in_since_until(tmp_path: Path) -> None:
    header = ["customer_id", "changed"]
    rows = [
        ["old", "2026-10-01T09:00:00+00:00"],
        ["at-since", "2026-10-02T09:00:00+00:00"],
        ["inside", "2026-10-02T09:00:01+00:00"],
        ["at-until", "2026-10-03T09:00:00+00:00"],
        ["future", "2026-10-03T09:00:01+00:00"],
        ["unknown", ""],
        ["naive-inside", "2026-10-02 13:00:00"],  # Istanbul: 10:00 UTC
    ]
    write_csv(tmp_path / "c.csv", header, rows)
    src = source(
        {
            "customers": {
                "path": "c.csv",
                "updated_at": "changed",
                "default_columns": False,
                "columns": {"external_id": "customer_id", "updated_at": "changed"},
            }
        },
        tmp_path,
    )
    since = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)
    until = datetime(2026, 10, 3, 9, 0, tzinfo=UTC)
    ids = [r.external_id for r in src.read(Stream.CUSTOMERS, since, until)]
    assert ids == ["inside", "at-until", "unknown", "naive-inside"]
    full = [r.external_id for r in src.read(Stream.CUSTOMERS, None, until)]
    assert full == ["old", "at-since", "inside", "at-until", "unknown", "naive-inside"]


def test_without_updated_at_every_row_is_read(tmp_path: Path) -> None:
    write_csv(tmp_path / "c.csv", ["customer_id", "updated_at"], [["1", "2020-01-01T00:00:00Z"]])
    src = source(
        {
            "customers": {
                "path": "c.csv",
                "default_columns": False,
                "columns": {"external_id": "customer_id"},
            }
        },
        tmp_path,
    )
    assert [r.external_id for r in src.read(Stream.CUSTOMERS, UNTIL, UNTIL)] == ["1"]


# --- memory ---------------------------------------------------------------------------------


def test_a_200k_row_file_streams_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("customer_id,first_name,last_name,updated_at\n")
        handle.writelines(
            f"{n},Ayşe{n % 97},Yılmaz{n % 89},2026-10-{1 + n % 28:02d}T10:00:00+03:00\n"
            for n in range(200_000)
        )
    src = source(
        {
            "customers": {
                "path": "big.csv",
                "default_columns": False,
                "columns": {
                    "external_id": "customer_id",
                    "first_name": "first_name",
                    "updated_at": "updated_at",
                },
            }
        },
        tmp_path,
    )
    reader = src.read(Stream.CUSTOMERS, None, UNTIL)
    assert inspect.isgenerator(reader)
    # Trace the first 20,000 rows: a reader that loaded the file (or kept what it read)
    # would show it here; tracing all 200,000 would only make the test slow.
    tracemalloc.start()
    try:
        count = sum(isinstance(record, Customer) for record in islice(reader, 20_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    count += sum(isinstance(record, Customer) for record in reader)
    assert count == 200_000
    # the file is ~11 MB and its records would take far more; streaming holds a few rows
    assert path.stat().st_size > 10_000_000
    assert peak < 1024 * 1024


def test_close_stops_an_unfinished_read() -> None:
    src = source({"customers": {"path": "sample_data/customers.csv"}}, ROOT)
    reader = src.read(Stream.CUSTOMERS, None, UNTIL)
    assert isinstance(next(reader), Customer)
    src.close()
    with pytest.raises(StopIteration):
        next(reader)


# --- the bad-input corpus ------------------------------------------------------------------

CORPUS_SOURCES: dict[str, tuple[Stream, dict[str, Any]]] = {
    "customers.csv": (Stream.CUSTOMERS, {"customers": {"path": "customers.csv"}}),
    "orders.jsonl": (Stream.ORDERS, {"orders": {"path": "orders.jsonl"}}),
    "carts.jsonl": (Stream.CARTS, {"carts": {"path": "carts.jsonl"}}),
    "order_lines.csv": (
        Stream.ORDERS,
        {"orders": {"path": "order_lines.csv", "columns": {"external_id": "order_id"}}},
    ),
}

# (file, line, external id, action, field, words in the reason) — one row per README case
CORPUS_ISSUES = [
    ("customers.csv", 3, "200002", "quarantined", "email", "invalid e-mail address"),
    ("customers.csv", 5, None, "quarantined", "customer_id", "missing identifier"),
    ("customers.csv", 6, "200005", "quarantined", "created_at", "unparseable date/time"),
    ("customers.csv", 8, "200007", "corrected", "first_name", "truncated from 10000 to 255"),
    ("customers.csv", 12, "200011", "quarantined", "email", "Internationalized characters"),
    ("customers.csv", 13, "200012", "corrected", "phone", "cleared the invalid value '0532 123'"),
    ("customers.csv", 14, None, "quarantined", "", "has 3 fields but the header has 16"),
    ("customers.csv", 15, "200014", "quarantined", "accepts_email_marketing", "unknown consent"),
    ("orders.jsonl", 2, "500002", "quarantined", "line_items[0].quantity", "must be positive"),
    ("orders.jsonl", 4, "500004", "quarantined", "currency", "unknown ISO 4217 currency"),
    ("orders.jsonl", 5, None, "quarantined", "", "malformed JSON"),
    ("orders.jsonl", 6, None, "quarantined", "id", "missing identifier"),
    ("orders.jsonl", 7, "500007", "quarantined", "created_at", "unparseable date/time"),
    ("orders.jsonl", 8, None, "quarantined", "", "expected a JSON object"),
    ("orders.jsonl", 9, "500009", "quarantined", "status", "unknown order status"),
    ("orders.jsonl", 11, "500011", "quarantined", "line_items[1].price", "not a number"),
    ("carts.jsonl", 2, "700002", "quarantined", "total_price", "negative amount"),
    ("carts.jsonl", 4, "700004", "quarantined", "completed_at", "true/false or a date/time"),
    ("order_lines.csv", 5, "600002", "quarantined", "quantity", "must be positive"),
]
CORPUS_GOOD = {
    "customers.csv": [
        "200001",
        "200003",
        "200006",
        "200007",
        "200008",
        "200009",
        "200010",
        "200012",  # its bad phone cleared (corrected), the customer kept
        "200015",
        "200016",
    ],
    "orders.jsonl": ["500001", "500003", "500010", "500012"],
    "carts.jsonl": ["700001", "700003", "700005"],
    "order_lines.csv": ["600001", "600003"],
}


def read_corpus(name: str) -> tuple[list[Record], list[RecordIssue]]:
    stream, config = CORPUS_SOURCES[name]
    return split(read_all(source(config, CORPUS), stream))


@pytest.mark.parametrize(
    ("name", "line", "external_id", "action", "field", "words"),
    CORPUS_ISSUES,
    ids=[f"{c[0]}:{c[1]}" for c in CORPUS_ISSUES],
)
def test_each_corpus_case_yields_a_clear_issue(
    name: str, line: int, external_id: str | None, action: str, field: str, words: str
) -> None:
    _, issues = read_corpus(name)
    found = [i for i in issues if i.reason.startswith(f"line {line}:")]
    assert len(found) == 1, [i.reason for i in issues]
    issue = found[0]
    assert (issue.external_id, issue.action.value, issue.field) == (external_id, action, field)
    assert words in issue.reason
    assert issue.excerpt and len(issue.excerpt) <= 200


@pytest.mark.parametrize("name", sorted(CORPUS_GOOD))
def test_good_corpus_rows_around_the_bad_ones_come_through(name: str) -> None:
    records, issues = read_corpus(name)
    assert [r.external_id for r in records] == CORPUS_GOOD[name]
    expected = sorted(c[1] for c in CORPUS_ISSUES if c[0] == name)
    assert sorted(int(i.reason.split(":")[0].split()[-1]) for i in issues) == expected


def test_corpus_values_are_normalised() -> None:
    records, _ = read_corpus("customers.csv")
    by_id = {r.external_id: r for r in records if isinstance(r, Customer)}
    assert by_id["200010"].email == "ibrahim@example.com"
    assert (by_id["200010"].first_name, by_id["200010"].last_name) == ("İBRAHİM", "ŞAHİN")
    assert by_id["200008"].email == by_id["200009"].email == "mehmet.kaya@example.com"
    assert by_id["200003"].phone == "+905343334455"
    assert len(by_id["200007"].first_name or "") == 255
    assert by_id["200015"].email is None and by_id["200015"].phone == "+905455556677"
    assert by_id["200016"].email is None and by_id["200016"].phone is None
    orders, _ = read_corpus("orders.jsonl")
    guest = next(o for o in orders if o.external_id == "500010")
    assert isinstance(guest, Order) and guest.customer_external_id is None
    assert guest.email == "misafir.alici@example.net"
    shouty = next(o for o in orders if o.external_id == "500012")
    assert isinstance(shouty, Order) and shouty.email == "ibrahim@example.com"


# --- configuration and check() -----------------------------------------------------------


@pytest.mark.parametrize(
    ("stream_config", "words"),
    [
        ({"path": "c.csv", "columns": {"emial": "email"}}, "columns.emial"),
        (
            {"path": "c.csv", "default_columns": False, "columns": {"email": "email"}},
            "columns.external_id",
        ),
        ({"path": "c.data"}, "set format"),
        ({"path": "c.csv", "colums": {}}, "colums"),
        ({"path": "c.csv", "encoding": "klingon"}, "unknown text encoding"),
    ],
)
def test_config_mistakes_are_named(stream_config: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        source({"customers": stream_config}, Path("."))
    assert any(words in str(issue) for issue in caught.value.issues), caught.value
    assert all(issue.key.startswith("sources.shop.customers") for issue in caught.value.issues)


def test_unknown_line_field_and_missing_streams_are_config_errors() -> None:
    with pytest.raises(ValidationError, match=r"line_columns\.colour"):
        FilesSourceConfig.model_validate(
            {"kind": "files", "orders": {"path": "o.jsonl", "line_columns": {"colour": "c"}}}
        )
    with pytest.raises(ValidationError, match="at least one"):
        FilesSourceConfig.model_validate({"kind": "files"})
    with pytest.raises(ValidationError, match="unknown time zone"):
        FilesSourceConfig.model_validate(
            {"kind": "files", "timezone": "Mars/Olympus", "customers": {"path": "c.csv"}}
        )


def test_every_config_field_has_a_description() -> None:
    from connectors import files_config

    models: list[type[BaseModel]] = [files_config.FilesSourceConfig, files_config.CustomersFile,
              files_config.OrdersFile, files_config.CartsFile]  # fmt: skip
    for model in models:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_check_names_a_missing_file_and_a_missing_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "c.csv", ["customer_id", "mail"], [["1", "a@example.com"]])
    src = source(
        {"customers": {"path": "c.csv"}, "orders": {"path": "nowhere.jsonl"}}, tmp_path, "shop"
    )
    by_stream = {check.what.split()[0]: check for check in src.check()}
    customers, orders = by_stream["customers"], by_stream["orders"]
    assert not customers.ok
    assert (
        "'email'" in customers.detail and "sources.shop.customers.columns.email" in customers.detail
    )
    assert (
        not orders.ok
        and "not found" in orders.detail
        and "sources.shop.orders.path" in orders.detail
    )
    with pytest.raises(ConfigError) as caught:
        read_all(src, Stream.CUSTOMERS)
    assert "sources.shop.customers.columns.email" in {issue.key for issue in caught.value.issues}
    with pytest.raises(ConfigError, match="file not found"):
        read_all(src, Stream.ORDERS)


def test_check_fails_when_json_records_lack_the_id(tmp_path: Path) -> None:
    (tmp_path / "o.jsonl").write_bytes(b'{"number": "1"}\n')
    [check] = source({"orders": {"path": "o.jsonl"}}, tmp_path).check()
    assert not check.ok and "columns.external_id" in check.detail


def test_check_reads_json_lines_in_the_files_own_encoding(tmp_path: Path) -> None:
    """What `read` takes, `check` passes: a cp1254 export is not "not JSON"."""
    line = '{"customer_id": "1", "first_name": "Ayşe", "email": "a@example.com"}\n'
    (tmp_path / "c.jsonl").write_bytes(line.encode("cp1254"))
    config = {"path": "c.jsonl", "encoding": "cp1254", "columns": {"external_id": "customer_id"}}
    [check] = source({"customers": config}, tmp_path).check()
    assert check.ok, check.detail
    [record] = read_all(source({"customers": config}, tmp_path), Stream.CUSTOMERS)
    assert isinstance(record, Customer) and record.first_name == "Ayşe"
    (tmp_path / "c.jsonl").write_bytes(b"[1, 2]\n")
    [check] = source({"customers": config}, tmp_path).check()
    assert not check.ok and "line 1" in check.detail and "JSON object" in check.detail


def test_a_file_in_the_wrong_encoding_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes("customer_id,first_name\n1,Ayşe\n".encode("cp1254"))
    config = {
        "path": "c.csv",
        "default_columns": False,
        "columns": {"external_id": "customer_id", "first_name": "first_name"},
    }
    with pytest.raises(ConfigError, match="encoding"):
        read_all(source({"customers": config}, tmp_path), Stream.CUSTOMERS)
    [record] = read_all(
        source({"customers": {**config, "encoding": "cp1254"}}, tmp_path), Stream.CUSTOMERS
    )
    assert isinstance(record, Customer) and record.first_name == "Ayşe"


def test_reading_an_unconfigured_stream_is_a_config_error() -> None:
    src = source({"customers": {"path": "sample_data/customers.csv"}}, ROOT)
    with pytest.raises(ConfigError, match=r"sources\.shop\.carts"):
        src.read(Stream.CARTS, None, UNTIL)


# --- version: the token a pull compares to skip an unchanged file ---------------------


def test_version_changes_with_the_file_and_its_mapping_and_nothing_else(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", ["customer_id", "email"], [["1", "a@example.com"]])
    columns = {"external_id": "customer_id", "email": "email"}
    config: dict[str, Any] = {
        "customers": {"path": "c.csv", "default_columns": False, "columns": columns}
    }
    src = source(config, tmp_path)
    assert isinstance(src, Versioned)
    first = src.version(Stream.CUSTOMERS)
    assert first is not None and str(path.resolve()) in first
    assert src.version(Stream.CUSTOMERS) == first  # stable while nothing changes
    assert source(config, tmp_path).version(Stream.CUSTOMERS) == first  # and across runs
    list(src.read(Stream.CUSTOMERS, None, UNTIL))
    assert src.version(Stream.CUSTOMERS) == first  # reading changes nothing

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched, same bytes
    touched = src.version(Stream.CUSTOMERS)
    assert touched not in (None, first)
    path.write_text(path.read_text() + "2,b@example.com\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # same time, more bytes
    grown = src.version(Stream.CUSTOMERS)
    assert grown not in (None, first, touched)

    city = {**config["customers"], "columns": {**columns, "city": "email"}}
    remapped = source({"customers": city}, tmp_path)
    assert remapped.version(Stream.CUSTOMERS) not in (None, grown)  # read differently
    zoned = source({"timezone": "UTC", **config}, tmp_path)
    assert zoned.version(Stream.CUSTOMERS) not in (None, grown)

    assert src.version(Stream.ORDERS) is None  # not configured
    path.unlink()
    assert src.version(Stream.CUSTOMERS) is None  # cannot tell: the pull reads (and fails)
