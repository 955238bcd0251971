"""The SQL source against a Turkish shop's own database, on SQLite and on PostgreSQL.

The shop (``tests/sql_shop.py``) keeps order lines and cart items in tables of their own,
totals only in the lines, and update times three ways (naive local timestamps, epoch
milliseconds, epoch seconds); the source must read it into exactly the canonical records
it was written from.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sql import SqlSource
from connectors.sql.errors import classify, explanation, translated
from crmsync.contract import ConnectorContext
from crmsync.errors import AuthError, ConfigError, ConnectorError, TransientError
from crmsync.records import Cart, Customer, Order, Record, RecordIssue, Stream
from crmsync.sample import SampleSpec, iter_store
from tests.sql_shop import create_shop, drop_shop, local, shop_config, write_store

SPEC = SampleSpec(customers=120, orders_per_customer=3.0, seed=11)
FOREVER = datetime(2100, 1, 1, tzinfo=UTC)
STREAM_OF = {Customer: Stream.CUSTOMERS, Order: Stream.ORDERS, Cart: Stream.CARTS}


@dataclass
class Shop:
    url: str
    schema: str | None
    engine: sa.Engine
    tables: sa.MetaData
    truth: dict[Stream, dict[str, Record]] = field(default_factory=dict)

    def table(self, name: str) -> sa.Table:
        return self.tables.tables[f"{self.schema}.{name}" if self.schema else name]

    def source(self, **extra: Any) -> SqlSource:
        return SqlSource(
            shop_config(self.url, self.schema, **extra), ConnectorContext("shop", Path("."))
        )


def by_stream(records: Iterator[Record]) -> dict[Stream, dict[str, Record]]:
    found: dict[Stream, dict[str, Record]] = {stream: {} for stream in Stream}
    for record in records:
        found[STREAM_OF[type(record)]][record.external_id] = record
    return found


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'shop.db'}", None
    else:
        url, schema = request.getfixturevalue("postgres_url"), f"magaza_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    tables = create_shop(engine, schema)
    try:
        write_store(engine, tables, iter_store(SPEC))
        yield Shop(url, schema, engine, tables, by_stream(iter_store(SPEC)))
    finally:
        drop_shop(engine, schema)
        engine.dispose()


def read_all(source: SqlSource, stream: Stream, since: datetime | None = None) -> list[Any]:
    return list(source.read(stream, since, FOREVER))


# --- reading --------------------------------------------------------------------------


def test_reads_every_stream_into_exactly_the_records_it_was_written_from(shop: Shop) -> None:
    source = shop.source(page_size=37)
    for stream in (Stream.CUSTOMERS, Stream.ORDERS, Stream.CARTS):
        read = read_all(source, stream)
        assert [item for item in read if isinstance(item, RecordIssue)] == []
        assert {record.external_id: record for record in read} == shop.truth[stream]
    source.close()


def test_order_totals_and_cart_values_come_from_their_rows(shop: Shop) -> None:
    """No total column exists: Σ(quantity × unit price − discount), and the discounts summed."""
    source = shop.source()
    for order in read_all(source, Stream.ORDERS):
        lines = order.lines
        assert order.total == sum(ln.quantity * ln.unit_price - ln.discount for ln in lines)
        assert order.discount_total == sum(line.discount for line in lines)
    for cart in read_all(source, Stream.CARTS):
        assert cart.value == sum(item.quantity * item.unit_price for item in cart.items)
    source.close()


def test_pages_by_keyset_with_each_page_of_orders_joined_to_its_lines(shop: Shop) -> None:
    """One statement per page of orders, lines included: never one query per order."""
    statements: list[str] = []
    pages: list[int] = []
    config = shop_config(shop.url, shop.schema, page_size=25)
    source = SqlSource(
        config, ConnectorContext("shop", Path(".")), between_pages=lambda _, n: pages.append(n)
    )

    @sa.event.listens_for(source.engine, "before_cursor_execute")
    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    orders = read_all(source, Stream.ORDERS)
    reads = [s for s in statements if "siparisler AS src WHERE" in s]
    keyset = [s for s in reads if "ORDER BY src.degisim_ms, src.siparis_no" in s]
    full_pages, rest = divmod(len(orders), 25)
    assert pages == list(range(1, full_pages + (rest > 0) + 1))
    assert len(keyset) == full_pages + 1  # the last, short page ends the read
    assert len(reads) == len(keyset) + 1  # and a last pass for orders without update time
    assert all("(src.degisim_ms, src.siparis_no) >" in s for s in keyset[1:])
    assert all("LEFT OUTER JOIN" in s and "siparis_kalemleri AS child" in s for s in reads)
    assert all(s.endswith("ORDER BY page.degisim_ms, page.siparis_no, child.sira") for s in keyset)
    assert sum("siparis_kalemleri" in s for s in statements) == len(reads) + 1  # + its probe
    if shop.schema is not None:  # SQLite's dialect always writes OFFSET 0 after a LIMIT
        assert not any("OFFSET" in s for s in statements)
    source.close()


def test_an_incremental_read_takes_exactly_the_window_since_exclusive_until_inclusive(
    shop: Shop,
) -> None:
    """Each update-time type (naive local, epoch ms, epoch s) is compared in SQL as stored."""
    source = shop.source(page_size=10)
    for stream in (Stream.CUSTOMERS, Stream.ORDERS, Stream.CARTS):
        times = sorted({r.updated_at for r in shop.truth[stream].values() if r.updated_at})
        since, until = times[len(times) // 3], times[2 * len(times) // 3]
        expected = {
            key
            for key, r in shop.truth[stream].items()
            if r.updated_at and since < r.updated_at <= until
        }
        got = {r.external_id for r in source.read(stream, since, until)}
        assert got == expected, stream
        assert list(source.read(stream, until, until)) == []
    source.close()


def test_naive_database_times_are_read_in_the_configured_zone(shop: Shop) -> None:
    """A customer written at 12:00 Istanbul time is 09:00 UTC, and the window agrees."""
    moment = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    with shop.engine.begin() as conn:
        conn.execute(
            shop.table("musteriler").insert(),
            {"musteri_no": 1, "eposta": "saat@example.com", "guncelleme_zamani": local(moment)},
        )
    assert local(moment) == datetime(2027, 3, 1, 12, 0)
    source = shop.source()
    (read,) = read_all(source, Stream.CUSTOMERS, moment - timedelta(seconds=1))
    assert read.updated_at == moment
    assert read_all(source, Stream.CUSTOMERS, moment) == []
    source.close()


def test_a_full_read_also_takes_rows_without_an_update_time(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        conn.execute(
            shop.table("musteriler").insert(),
            [{"musteri_no": n, "eposta": f"zamansiz{n}@example.com"} for n in (7, 8, 9)],
        )
    source = shop.source(page_size=2)
    full = {r.external_id for r in read_all(source, Stream.CUSTOMERS)}
    assert {"7", "8", "9"} <= full and len(full) == len(shop.truth[Stream.CUSTOMERS]) + 3
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert {"7", "8", "9"}.isdisjoint(
        r.external_id for r in read_all(source, Stream.CUSTOMERS, since)
    )
    source.close()


def test_a_bad_row_is_quarantined_with_its_key_and_the_read_goes_on(shop: Shop) -> None:
    with shop.engine.begin() as conn:
        conn.execute(
            shop.table("musteriler").insert(),
            {"musteri_no": 5, "eposta": "ayşe@@example", "guncelleme_zamani": datetime(2026, 1, 1)},
        )
        conn.execute(
            shop.table("siparisler").insert(),
            [
                {"siparis_no": 6, "musteri_no": 5, "siparis_zamani": datetime(2026, 1, 1),
                 "durum": "ODENDI", "para_birimi": "YTL", "degisim_ms": 1_767_000_000_000},
                {"siparis_no": 7, "musteri_no": 5, "siparis_zamani": datetime(2026, 1, 1),
                 "durum": "ODENDI", "para_birimi": "TRY", "degisim_ms": 1_767_000_000_000},
            ],
        )  # fmt: skip
        conn.execute(
            shop.table("siparis_kalemleri").insert(),
            {"siparis_no": 6, "sira": 1, "adet": 1, "birim_fiyat": 10},
        )
    source = shop.source()
    customers = read_all(source, Stream.CUSTOMERS)
    (bad,) = [i for i in customers if isinstance(i, RecordIssue)]
    assert (bad.external_id, bad.field, bad.action) == ("5", "email", "quarantined")
    assert len(customers) == len(shop.truth[Stream.CUSTOMERS]) + 1
    orders = read_all(source, Stream.ORDERS)
    issues = {i.external_id: i for i in orders if isinstance(i, RecordIssue)}
    assert issues["6"].field == "currency"
    assert issues["7"].field == "total" and "no lines" in issues["7"].reason  # nothing to sum
    assert len(orders) == len(shop.truth[Stream.ORDERS]) + 2
    source.close()


def test_lines_may_be_a_json_column_instead_of_a_table(shop: Shop) -> None:
    schema = f'"{shop.schema}".' if shop.schema else ""
    with shop.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {schema}json_siparis (no INTEGER PRIMARY KEY, eposta VARCHAR(99), "
                "zaman BIGINT, kalemler TEXT)"
            )
        )
        conn.execute(
            sa.text(f"INSERT INTO {schema}json_siparis VALUES (:no, :e, :t, :k)"),
            [
                {"no": 1, "e": "a@example.com", "t": 1_700_000_000,
                 "k": '[{"adet": 2, "fiyat": "10.50"}, {"adet": 1, "fiyat": "4"}]'},
                {"no": 2, "e": "b@example.com", "t": 1_700_000_001, "k": "[{bozuk"},
            ],
        )  # fmt: skip
    config = shop_config(shop.url, shop.schema)
    config["streams"] = {
        "orders": {
            "table": "json_siparis",
            "key": "no",
            "updated_at": "zaman",
            "updated_at_type": "epoch",
            "fields": {
                "email": "eposta",
                "placed_at": {"path": "zaman", "format": "epoch"},
                "status": {"const": "paid"},
                "currency": {"const": "TRY"},
            },
            "lines": {"path": "kalemler", "fields": {"quantity": "adet", "unit_price": "fiyat"}},
        }
    }
    source = SqlSource(config, ConnectorContext("shop", Path(".")))
    good, bad = read_all(source, Stream.ORDERS)
    assert isinstance(good, Order) and str(good.total) == "25.00"
    assert isinstance(bad, RecordIssue) and bad.external_id == "2" and bad.field == "kalemler"
    source.close()


# --- check and configuration errors ---------------------------------------------------


def test_check_connects_and_maps_a_first_row_of_every_stream(shop: Shop) -> None:
    source = shop.source()
    checks = source.check()
    assert [c.ok for c in checks] == [True, True, True], checks
    assert all("maps cleanly" in c.detail for c in checks)
    source.close()


def test_check_names_the_key_of_every_mapped_column_the_database_lacks(shop: Shop) -> None:
    config = shop_config(shop.url, shop.schema)
    config["streams"]["customers"]["fields"]["email"] = "e_posta"
    config["streams"]["orders"]["lines"]["fields"]["quantity"] = "miktar"
    config["streams"]["orders"]["lines"]["order_by"] = ["satir"]
    source = SqlSource(config, ConnectorContext("shop", Path(".")))
    customers, orders, carts = source.check()
    assert not customers.ok and "sources.shop.streams.customers.fields.email" in customers.detail
    assert "no column 'e_posta' in table musteriler" in customers.detail
    assert not orders.ok
    assert "sources.shop.streams.orders.lines.fields.quantity" in orders.detail
    assert "sources.shop.streams.orders.lines.order_by" in orders.detail
    assert carts.ok
    with pytest.raises(ConfigError) as raised:
        read_all(source, Stream.CUSTOMERS)
    assert raised.value.issues[0].key == "sources.shop.streams.customers.fields.email"
    source.close()


def test_check_says_when_the_update_time_type_does_not_fit_the_column(shop: Shop) -> None:
    config = shop_config(shop.url, shop.schema)
    config["streams"]["orders"]["updated_at_type"] = "epoch"  # the column holds milliseconds
    config["streams"]["customers"]["updated_at_type"] = "epoch_ms"  # it holds timestamps
    source = SqlSource(config, ConnectorContext("shop", Path(".")))
    customers, orders, _ = source.check()
    assert not customers.ok and "updated_at_type" in customers.detail
    assert "use 'timestamp'" in customers.detail
    assert not orders.ok and "use 'epoch_ms'" in orders.detail
    source.close()


def test_a_query_the_database_refuses_is_a_config_error_naming_the_stream(shop: Shop) -> None:
    config = shop_config(shop.url, shop.schema)
    config["streams"]["carts"]["query"] = "SELECT * FROM sepetlerr"
    source = SqlSource(config, ConnectorContext("shop", Path(".")))
    *_, carts = source.check()
    assert not carts.ok and "sources.shop.streams.carts" in carts.detail
    with pytest.raises(ConfigError, match="refused the query"):
        read_all(source, Stream.CARTS)
    source.close()


def test_an_unreachable_database_is_transient_and_its_password_never_shown() -> None:
    url = "postgresql+psycopg://okur:cok-gizli@127.0.0.1:9/magaza"
    source = SqlSource(
        shop_config(url, None, connect_timeout=2), ConnectorContext("shop", Path("."))
    )
    checks = source.check()
    assert not any(c.ok for c in checks)
    assert all("cok-gizli" not in c.what + c.detail for c in checks)
    with pytest.raises(TransientError) as raised:
        read_all(source, Stream.CUSTOMERS)
    assert "cok-gizli" not in str(raised.value)
    assert "cok-gizli" not in repr(source.config)
    source.close()


def config_errors(**changes: Any) -> list[str]:
    config = shop_config("sqlite://", None)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        target = config
        for step in path:
            target = target[step]
        target[last] = value
    with pytest.raises(ConfigError) as raised:
        SqlSource(config, ConnectorContext("shop", Path(".")))
    return [str(issue) for issue in raised.value.issues]


def test_configuration_mistakes_are_reported_under_their_keys() -> None:
    (both,) = config_errors(streams__customers__query="SELECT * FROM musteriler")
    assert both.startswith("sources.shop.streams.customers") and "exactly one" in both
    (lines,) = config_errors(streams__customers__lines={"table": "x", "key": "k"})
    assert "streams.customers.lines: not used by the customers stream" in lines
    (moved,) = config_errors(streams__orders__fields__updated_at="siparis_zamani")
    assert "streams.orders.fields.updated_at" in moved and "updated_at column" in moved
    (no_key,) = config_errors(streams__orders__lines__key=None)
    assert "streams.orders.lines" in no_key and "'key'" in no_key
    (bad_status,) = config_errors(
        streams__orders__fields__status={"path": "durum", "map": {"ODENDI": "odendi"}}
    )
    assert "streams.orders.fields.status.map.ODENDI" in bad_status
    (not_select,) = config_errors(streams__carts__query="DELETE FROM sepetler")
    assert "must be a SELECT" in not_select
    (typo,) = config_errors(streams__orders__tabel="siparisler")
    assert "streams.orders.tabel" in typo


@pytest.mark.parametrize(
    ("error", "message", "decision"),
    [
        (sa.exc.OperationalError, 'FATAL:  password authentication failed for user "okur"', "auth"),
        (sa.exc.OperationalError, "(1045, \"Access denied for user 'okur'@'10.0.0.5'\")", "auth"),
        (sa.exc.ProgrammingError, 'relation "sepetlerr" does not exist', "config"),
        (sa.exc.OperationalError, "no such column: src.e_posta", "config"),
        (sa.exc.OperationalError, "server closed the connection unexpectedly", "transient"),
        (sa.exc.InterfaceError, "connection already closed", "transient"),
        (sa.exc.DataError, "numeric field overflow", "failure"),
    ],
)
def test_database_errors_are_classified_before_they_are_raised(
    error: type[sa.exc.DBAPIError], message: str, decision: str
) -> None:
    exc = error("SELECT 1", {}, Exception(f"{message} (url okur:cok-gizli@db)"))
    assert classify(exc, explanation(exc, None)) == decision
    assert "cok-gizli" not in explanation(exc, "cok-gizli")
    raised = {"auth": AuthError, "config": ConfigError, "transient": TransientError}
    expected = raised.get(decision, ConnectorError)
    with pytest.raises(expected) as caught, translated("sources.shop", "orders", "cok-gizli"):
        raise exc
    assert type(caught.value) is expected and "cok-gizli" not in str(caught.value)


@pytest.mark.postgres
def test_timestamptz_update_times_are_compared_as_instants(postgres_url: str) -> None:
    """A session zone far from UTC changes nothing: the bounds are bound with their zone."""
    engine = sa.create_engine(postgres_url)
    moments = [datetime(2026, 5, 1, 21, 0, tzinfo=UTC) + timedelta(hours=n) for n in range(6)]
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE uyeler (no int PRIMARY KEY, eposta text, degisim timestamptz)")
        )
        conn.execute(
            sa.text("INSERT INTO uyeler VALUES (:no, :e, :t)"),
            [{"no": n, "e": f"uye{n}@example.com", "t": t} for n, t in enumerate(moments)],
        )
    url = postgres_url + "%20-ctimezone%3DPacific/Kiritimati"  # UTC+14 for the session
    config = {
        "kind": "sql",
        "url": url,
        "streams": {
            "customers": {
                "table": "uyeler",
                "key": "no",
                "updated_at": "degisim",
                "updated_at_type": "timestamptz",
                "fields": {"email": "eposta"},
            }
        },
    }
    source = SqlSource(config, ConnectorContext("shop", Path(".")))
    (check,) = source.check()
    assert check.ok, check
    read = list(source.read(Stream.CUSTOMERS, moments[1], moments[4]))
    assert [r.external_id for r in read] == ["2", "3", "4"]
    assert [r.updated_at for r in read] == moments[2:5]
    source.close()
    engine.dispose()
