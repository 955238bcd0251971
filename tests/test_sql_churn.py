"""No gap under keyset paging: rows changed while a pull pages through the shop's tables.

Between pages the shop moves rows already read and rows not yet read: forward within the
run's window (a later page reads them), past the run's start (the next run reads them),
backwards behind the read position (a transaction that began before the pull and
committed during it: the next run's lookback reads it), changes an order's lines with it,
and adds rows. After the next, quiet run, staging must equal a fresh full pull of the
final database exactly. The same churn under offset paging loses records, which shows the
test can see a gap.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sql import SqlSource
from connectors.sql.keyset import KeysetPages, Row, source_rows, time_type
from crmsync.contract import ConnectorContext
from crmsync.records import Stream
from crmsync.sample import SampleSpec, iter_store
from engine.pull import pull_source
from state import schema
from state.store import Store
from tests.sql_shop import (
    ZONE,
    create_shop,
    drop_shop,
    epoch_ms,
    local,
    shop_config,
    write_store,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PAGE = 7
LOOKBACK = timedelta(seconds=60)
SPAN = 1000  # seconds over which each stream's update times are spread
SPEC = SampleSpec(customers=90, orders_per_customer=2.0, seed=5)


@dataclasses.dataclass(frozen=True)
class Column:
    """How one stream's table keeps its key and update time."""

    table: str
    key: str
    updated: str
    stored: Callable[[datetime], Any]


COLUMNS = {
    Stream.CUSTOMERS: Column("musteriler", "musteri_no", "guncelleme_zamani", local),
    Stream.ORDERS: Column("siparisler", "siparis_no", "degisim_ms", epoch_ms),
    Stream.CARTS: Column("sepetler", "sepet_no", "guncelleme", lambda t: int(t.timestamp())),
}


class Shop:
    def __init__(self, url: str, schema_name: str | None) -> None:
        self.url, self.schema = url, schema_name
        self.engine = sa.create_engine(url)
        self.tables = create_shop(self.engine, schema_name)
        write_store(self.engine, self.tables, iter_store(SPEC))
        self.until = self._dense_times()

    def table(self, name: str) -> sa.Table:
        return self.tables.tables[f"{self.schema}.{name}" if self.schema else name]

    def _dense_times(self) -> datetime:
        """Every stream's rows spread evenly over SPAN in a shuffled order, so that the
        read position reaches the run's start and late commits have somewhere to land;
        returns the first run's start, when 80% of each stream exists."""
        rng = random.Random(3)
        with self.engine.begin() as conn:
            for column in COLUMNS.values():
                table = self.table(column.table)
                keys = list(conn.execute(sa.select(table.c[column.key])).scalars())
                rng.shuffle(keys)
                for rank, key in enumerate(keys):
                    moment = T0 + timedelta(seconds=rank * SPAN // len(keys))
                    conn.execute(
                        table.update()
                        .where(table.c[column.key] == key)
                        .values({column.updated: column.stored(moment)})
                    )
        return T0 + timedelta(seconds=SPAN * 8 // 10)

    def source(self, between: Callable[[Stream, int], None] | None = None) -> SqlSource:
        config = shop_config(self.url, self.schema, page_size=PAGE)
        return SqlSource(config, ConnectorContext("shop", Path(".")), between_pages=between)

    def close(self) -> None:
        drop_shop(self.engine, self.schema)
        self.engine.dispose()


class Churn:
    """Changes the shop between pages, relative to where the read is."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.done: dict[str, int] = dict.fromkeys(
            ("forward", "ahead_forward", "past_start", "ahead_past_start", "late", "new"), 0
        )
        self.next_id = 990_000_000
        self.later = 0

    def __call__(self, stream: Stream, number: int) -> None:
        column = COLUMNS[stream]
        table = self.shop.table(column.table)
        until = column.stored(self.shop.until)
        with self.shop.engine.begin() as conn:
            ordered = conn.execute(
                sa.select(table.c[column.key], table.c[column.updated])
                .where(table.c[column.updated] <= until)
                .order_by(table.c[column.updated], table.c[column.key])
            ).all()
            read = number * PAGE  # rows handed over so far, near enough

            def move(offset: int, moment: datetime, kind: str) -> None:
                """Gives one row a newer update time (never an older one: times only grow)."""
                if 0 <= offset < len(ordered) and self._time(stream, ordered[offset][1]) < moment:
                    key = ordered[offset][0]
                    self._change(conn, stream, table, column, key, moment)
                    self.done[kind] += 1

            self.later += 1
            after = self.shop.until + timedelta(seconds=self.later)
            within = self.shop.until - timedelta(seconds=1)
            move(read - 2, within, "forward")  # read already: again, later in this run
            move(read + 3, within, "ahead_forward")  # not yet read: read once, as changed
            move(read - 4, after, "past_start")  # read already: the next run reads it
            move(read + 6, after, "ahead_past_start")  # not yet read: the next run reads it
            position = self._time(stream, ordered[min(read, len(ordered)) - 1][1])
            if position >= self.shop.until - LOOKBACK / 2:  # committed late, behind the read
                move(read - 6, position - timedelta(seconds=2), "late")
            self._insert(conn, stream, after)

    @staticmethod
    def _time(stream: Stream, stored: Any) -> datetime:
        if stream is Stream.CUSTOMERS:
            naive = stored if isinstance(stored, datetime) else datetime.fromisoformat(stored)
            return local_to_utc(naive)
        if stream is Stream.ORDERS:
            return datetime.fromtimestamp(stored / 1000, UTC)
        return datetime.fromtimestamp(stored, UTC)

    def _change(
        self, conn: sa.Connection, stream: Stream, table: sa.Table, column: Column, key: Any,
        moment: datetime,
    ) -> None:  # fmt: skip
        values: dict[str, Any] = {column.updated: column.stored(moment)}
        if stream is Stream.CUSTOMERS:
            values["sehir"] = f"Şehir {self.later}"
        elif stream is Stream.ORDERS:
            values["durum"] = "TESLIM_EDILDI"
            lines = self.shop.table("siparis_kalemleri")
            conn.execute(
                lines.update()
                .where(lines.c.siparis_no == key, lines.c.sira == 1)
                .values(adet=lines.c.adet + 1)
            )
        else:
            values["tamamlandi"] = True
        conn.execute(table.update().where(table.c[column.key] == key).values(values))

    def _insert(self, conn: sa.Connection, stream: Stream, moment: datetime) -> None:
        self.next_id += 1
        number = self.next_id
        if stream is Stream.CUSTOMERS:
            conn.execute(
                self.shop.table("musteriler").insert(),
                {"musteri_no": number, "eposta": f"yeni{number}@example.com",
                 "guncelleme_zamani": local(moment)},
            )  # fmt: skip
        elif stream is Stream.ORDERS:
            conn.execute(
                self.shop.table("siparisler").insert(),
                {"siparis_no": number, "eposta": f"yeni{number}@example.com",
                 "siparis_zamani": local(moment), "durum": "ODENDI", "para_birimi": "TRY",
                 "degisim_ms": epoch_ms(moment)},
            )  # fmt: skip
            conn.execute(
                self.shop.table("siparis_kalemleri").insert(),
                {"siparis_no": number, "sira": 1, "adet": 2, "birim_fiyat": 19.90},
            )
        self.done["new"] += 1


def local_to_utc(naive: datetime) -> datetime:
    return naive.replace(tzinfo=ZONE).astimezone(UTC)


class OffsetPages:
    """The negative control: the same pages, by OFFSET into the window instead of by key."""

    def __init__(self, keyset: KeysetPages, schema_name: str | None) -> None:
        self.keyset = keyset
        config = keyset.config
        src = source_rows(config.table, config.query, keyset.columns, schema_name)
        at, key = src.c[config.updated_at], src.c[config.key]
        page = (
            sa.select(*(src.c[c] for c in keyset.columns))
            .where(at <= sa.bindparam("until", type_=time_type(config.updated_at_type)))
            .order_by(at, key)
            .limit(PAGE)
            .offset(sa.bindparam("offset"))
        )
        self.statement = keyset.with_children(page, (config.updated_at, config.key))

    def pages(
        self, since: datetime | None, until: datetime, *, between: Callable[[int], None] | None
    ) -> Iterator[list[Row]]:
        assert since is None  # the control is only run as a first, full read
        params = self.keyset.parameters(since, until)
        number = 0
        while True:
            page = self.keyset.run(self.statement, {**params, "offset": number * PAGE})
            if page:
                number += 1
                yield page
                if between is not None:
                    between(number)
            if len(page) < PAGE:
                return


def staged(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    with store.engine.connect() as conn:
        for table in (schema.customers, schema.orders, schema.order_lines, schema.carts):
            columns = [c for c in table.c if c.name != "staged_at"]
            rows = conn.execute(sa.select(*columns).where(table.c.source == "shop")).all()
            found[table.name] = sorted(tuple(row) for row in rows)
    return found


def two_runs(shop: Shop, state_url: str, *, offset: bool) -> Store:
    store = Store(state_url)
    churn = Churn(shop)
    source = shop.source(between=churn)
    if offset:
        for stream in source.streams():
            plan = source.plan(stream)
            source._plans[stream] = dataclasses.replace(
                plan, pages=OffsetPages(plan.pages, shop.schema)
            )  # type: ignore[arg-type]
    first = pull_source(store, "shop", source, until=shop.until, lookback=LOOKBACK)
    source.close()
    assert all(count > 0 for count in churn.done.values()), churn.done
    assert first.streams["orders"].received > 0
    if not offset:  # rows moved ahead within the window were read later in the same pull
        within = int((shop.until - timedelta(seconds=1)).timestamp() * 1000)
        for table in (schema.customers, schema.orders, schema.carts):
            with store.engine.connect() as conn:
                moved = conn.execute(
                    sa.select(sa.func.count()).where(table.c.updated_at == within)
                ).scalar()
            assert moved, table.name
    quiet = shop.source()
    pull_source(store, "shop", quiet, until=shop.until + timedelta(hours=1), lookback=LOOKBACK)
    quiet.close()
    return store


def fresh(shop: Shop, state_url: str) -> Store:
    store = Store(state_url)
    source = shop.source()
    pull_source(
        store, "shop", source, until=shop.until + timedelta(hours=1), lookback=LOOKBACK, full=True
    )
    source.close()
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Shop, list[str]]]:
    """The shop, and three state databases on the same engine."""
    if request.param == "sqlite":
        shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}", None)
        states = [f"sqlite:///{tmp_path / f'state{n}.db'}" for n in range(3)]
    else:
        base = request.getfixturevalue("postgres_url")
        shop = Shop(base, f"magaza_{uuid.uuid4().hex[:8]}")
        states = [_private_schema_url(base, n) for n in range(3)]
    try:
        yield shop, states
    finally:
        shop.close()
        if request.param == "postgresql":
            with sa.create_engine(shop.url, isolation_level="AUTOCOMMIT").connect() as conn:
                for n in range(3):
                    conn.execute(
                        sa.text(f'drop schema if exists "{_state_schema(shop.url, n)}" cascade')
                    )


def _state_schema(base: str, n: int) -> str:
    return f"{base.rsplit('%3D', 1)[1]}_s{n}"


def _private_schema_url(base: str, n: int) -> str:
    name = _state_schema(base, n)
    with sa.create_engine(base, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'create schema "{name}"'))
    return base.rsplit("%3D", 1)[0] + f"%3D{name}"


def test_rows_changed_while_the_pull_pages_are_all_staged_by_the_next_run(
    engines: tuple[Shop, list[str]],
) -> None:
    shop, (churned, truth, _) = engines
    assert staged(two_runs(shop, churned, offset=False)) == staged(fresh(shop, truth))


def test_the_same_churn_under_offset_paging_loses_records(
    engines: tuple[Shop, list[str]],
) -> None:
    shop, (_, truth, offset) = engines
    lossy = staged(two_runs(shop, offset, offset=True))
    exact = staged(fresh(shop, truth))
    assert lossy != exact
    missing = {row[1] for row in exact["customers"]} - {row[1] for row in lossy["customers"]}
    stale = set(exact["orders"]) - set(lossy["orders"])
    assert missing or stale
