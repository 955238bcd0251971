"""True status instants (issue 14, item 7): an order's fulfilled, cancelled and refunded
events are timed by when it reached the status where the source says so
(``fulfilled_at``, ``cancelled_at``, ``refunded_at``, mapped like ``placed_at``: a local
time of an Europe/Istanbul store becomes its UTC instant), else by its last change."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from connectors.records import MappingContext, MappingKeys, compile_stream
from crmsync.records import Order, OrderStatus, Stream
from engine.events import order_events
from state import schema
from state.events import StagedOrder
from state.stage_rows import LINE_COLUMNS, ORDER_CONTENT, build_order
from state.store import Store
from state.timeutil import to_ms
from tests.builders import order
from tests.e2e import edit_order
from tests.events_site import by_key, events, events_site, jsonl

ISTANBUL = ZoneInfo("Europe/Istanbul")
PLACED = datetime(2026, 10, 20, 7, 0, tzinfo=UTC)
CHANGED = datetime(2026, 10, 31, 9, 0, tzinfo=UTC)


def _staged(status: str, **times: int | None) -> StagedOrder:
    return StagedOrder(
        "shop", "o1", "c1", "a@example.com", None, "e:a@example.com",
        to_ms(PLACED) or 0, to_ms(CHANGED), to_ms(CHANGED) or 0, status, "TRY",
        50_000, 0, 20_000, **times,  # type: ignore[arg-type]
    )  # fmt: skip


def _times(events: list[object]) -> dict[str, datetime]:
    return {e.kind.value: e.occurred_at for e in events}  # type: ignore[attr-defined]


def test_status_events_take_the_status_times_and_else_the_last_change() -> None:
    fulfilled = datetime(2026, 10, 25, 20, 30, tzinfo=UTC)
    refunded = datetime(2026, 10, 28, 11, 15, tzinfo=UTC)
    timed = _staged("fulfilled", fulfilled_at=to_ms(fulfilled), refunded_at=to_ms(refunded))
    got = _times(order_events(timed))
    assert got["placed_order"] == PLACED
    assert got["fulfilled_order"] == fulfilled
    assert got["refunded_order"] == refunded

    untimed = _times(order_events(_staged("fulfilled")))  # the source gives no status time
    assert untimed["fulfilled_order"] == CHANGED and untimed["refunded_order"] == CHANGED

    cancelled = datetime(2026, 10, 21, 6, 0, tzinfo=UTC)
    got = _times(order_events(_staged("cancelled", cancelled_at=to_ms(cancelled))))
    assert got["cancelled_order"] == cancelled
    assert got["refunded_order"] == CHANGED  # a refund with no time of its own


def test_the_mapping_reads_local_status_times_as_the_stores_instants() -> None:
    builder = compile_stream(
        Stream.ORDERS,
        {
            "external_id": "id",
            "email": "email",
            "placed_at": "created",
            "status": "status",
            "currency": {"const": "TRY"},
            "total": "total",
            "fulfilled_at": "delivered",
            "cancelled_at": {"path": "cancelled", "format": "%d.%m.%Y %H:%M"},
            "refunded_at": {"path": "refund_time", "timezone": "UTC"},
        },
        None,
        context=MappingContext(tz=ISTANBUL),
        keys=MappingKeys.nested("sources.api.streams.orders"),
    )
    raw = {
        "id": "7",
        "email": "a@example.com",
        "created": "2026-10-31 23:30:00",
        "status": "fulfilled",
        "total": "10.00",
        "delivered": "2026-11-02 23:30:00",  # 23:30 in Istanbul is 20:30Z
        "cancelled": "03.11.2026 01:15",
        "refund_time": "2026-11-04 08:00:00",  # its own zone: UTC
    }
    [built] = builder.outcome(raw)
    assert isinstance(built, Order)
    assert built.placed_at == datetime(2026, 10, 31, 20, 30, tzinfo=UTC)
    assert built.fulfilled_at == datetime(2026, 11, 2, 20, 30, tzinfo=UTC)
    assert built.cancelled_at == datetime(2026, 11, 2, 22, 15, tzinfo=UTC)
    assert built.refunded_at == datetime(2026, 11, 4, 8, 0, tzinfo=UTC)
    [unmapped] = builder.outcome({**raw, "delivered": "", "cancelled": None})
    assert isinstance(unmapped, Order) and unmapped.fulfilled_at is None
    assert unmapped.cancelled_at is None


def _old_digest(built_content: tuple[object, ...], lines: tuple[tuple[object, ...], ...]) -> str:
    """The digest as staged before the status times existed (``stage_rows``' formula)."""
    content = dict(zip(ORDER_CONTENT, built_content[: len(ORDER_CONTENT)], strict=True))
    rows = [dict(zip(LINE_COLUMNS, line, strict=True)) for line in lines]
    body = orjson.dumps([content, rows])
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def test_an_order_without_status_times_keeps_the_digest_it_had_before_them() -> None:
    plain = order("1", "c1", "100.00", 3, status=OrderStatus.FULFILLED)
    built = build_order("shop", plain)
    assert built.content_hash == _old_digest(built.content, built.lines)
    assert built.content[len(ORDER_CONTENT) :] == (None, None, None)

    delivered = replace(plain, fulfilled_at=datetime(2026, 10, 30, 20, 30, tzinfo=UTC))
    timed = build_order("shop", delivered)
    assert timed.content_hash != built.content_hash  # a new status time is a change
    assert timed.content[len(ORDER_CONTENT) :] == (None, to_ms(delivered.fulfilled_at), None)


def test_status_times_are_staged_and_a_same_reread_stages_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        timed = replace(
            order("1", "c1", "100.00", 3, status=OrderStatus.REFUNDED, refunded="100.00"),
            refunded_at=datetime(2026, 10, 30, 8, 0, tzinfo=UTC),
            cancelled_at=datetime(2026, 10, 29, 8, 0, tzinfo=UTC),
        )
        first = store.stage("shop", Stream.ORDERS, [timed], cursor=None)
        again = store.stage("shop", Stream.ORDERS, [timed], cursor=None)
        o = schema.orders
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(o.c.refunded_at, o.c.cancelled_at, o.c.fulfilled_at)).one()
        assert tuple(row) == (to_ms(timed.refunded_at), to_ms(timed.cancelled_at), None)
        assert (first.staged, again.staged, again.unchanged) == (1, 0, 1)
    finally:
        store.close()


def test_an_istanbul_stores_status_times_arrive_as_their_instants(tmp_path: Path) -> None:
    site = events_site(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    text = site.config.read_text(encoding="utf-8")
    orders_path = f'path = "{site.data / "orders.jsonl"}"\n'
    mapped = (
        'columns = { fulfilled_at = "fulfilled_at", cancelled_at = "cancelled_at", '
        'refunded_at = "refunded_at" }\n'
    )
    text = text.replace('kind = "files"\n', 'kind = "files"\ntimezone = "Europe/Istanbul"\n', 1)
    site.config.write_text(text.replace(orders_path, orders_path + mapped), encoding="utf-8")
    orders = jsonl(site.data / "orders.jsonl")
    fulfilled = next(o for o in orders if o["status"] == "fulfilled" and o.get("email"))
    cancelled = next(o for o in orders if o["status"] == "cancelled" and o.get("email"))
    plain = next(
        o for o in orders if o["status"] == "fulfilled" and o.get("email") and o is not fulfilled
    )
    edit_order(
        site.data / "orders.jsonl",
        fulfilled["id"],
        fulfilled_at="2026-10-30 23:30:00",  # local: 20:30Z
        total_refunded="10.00",
        refunded_at="2026-10-31 00:10:00",  # local, past midnight: 21:10Z the day before
    )
    edit_order(site.data / "orders.jsonl", cancelled["id"], cancelled_at="2026-10-29 02:00:00")
    site.run_json()
    sent = by_key(events(site))
    assert sent[f"fulfilled_order:shop:{fulfilled['id']}"]["occurred_at"] == (
        "2026-10-30T20:30:00+00:00"
    )
    assert sent[f"refunded_order:shop:{fulfilled['id']}:1000"]["occurred_at"] == (
        "2026-10-30T21:10:00+00:00"
    )
    assert sent[f"cancelled_order:shop:{cancelled['id']}"]["occurred_at"] == (
        "2026-10-28T23:00:00+00:00"
    )
    # an order with no status time keeps its last change (its own offset: +03:00)
    updated = datetime.fromisoformat(plain["updated_at"]).astimezone(UTC)
    assert sent[f"fulfilled_order:shop:{plain['id']}"]["occurred_at"] == updated.isoformat()
    value = Decimal(sent[f"refunded_order:shop:{fulfilled['id']}:1000"]["value"])
    assert value == Decimal("10.00")


def test_a_0009_database_gains_the_columns_and_keeps_its_staged_orders(tmp_path: Path) -> None:
    from state.migrate import head_revision, upgrade
    from tests.rewind import rewind

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    try:
        orders = [order(str(i), f"c{i}", "100.00", 3) for i in range(5)]
        store.stage("shop", Stream.ORDERS, orders)
        rewind(store.engine, "0009")  # as 0009 left it
        assert upgrade(store.engine) == ("0009", head_revision())  # from 0009 on
        o = schema.orders
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(o.c.fulfilled_at, o.c.cancelled_at, o.c.refunded_at))
            assert {tuple(r) for r in rows} == {(None, None, None)}
            indexes = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
            assert "ix_carts_changed" in {name for (name,) in indexes}
        again = store.stage("shop", Stream.ORDERS, orders)
        assert (again.staged, again.unchanged) == (0, 5)  # their digests still hold
    finally:
        store.close()
