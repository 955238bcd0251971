"""Incremental planning: a run recomputes only the people whose plan may have changed,
and ends exactly where a run that recomputes everyone would, on both engines.

Two state databases get the same records and runs at the same as_of times; one plans
incrementally, the other is made to plan everyone before each run (its marks deleted).
After each step their ledgers (what the destination acknowledged), segment sizes and
changes must be equal, while the steps cross every kind of time boundary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.config import Config
from crmsync.records import OrderStatus, Stream
from crmsync.runs import RunOptions, RunReport
from engine.pipeline import run_pipeline
from engine.resolve import load_config
from state import schema
from state.store import Store
from tests.builders import NOW, cart, customer, order
from tests.conftest import POSTGRES_URL
from tests.e2e import config_text as site_config

SEGMENTS = """
[segments.big_30d]
rule = "spent_30d > 300"
[segments.champions]
rule = "rfm_label == \\"champions\\" or lifecycle_stage == \\"new\\""
[segments.birthday_soon]
rule = "month(today + days(7)) == birthday_month"
[segments.recent_cart]
rule = "cart_updated_at >= now - hours(30)"
"""


def config_text(state_url: str, root: Path) -> str:
    data = root / "data"
    data.mkdir(exist_ok=True)
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        (data / name).touch()
    tail = f"""[pipelines.main.profile]
windows_days = [7, 30, 90, 365]
{SEGMENTS}"""
    return site_config(state_url, data, root / "outbox", pipeline_tail=tail)


@dataclass
class Side:
    """One state database and the configuration that runs the pipeline on it."""

    store: Store
    config: Config

    def run(self, as_of: datetime, **options: Any) -> RunReport:
        spec = self.config.pipelines["main"]
        return run_pipeline(
            self.config, spec, self.store, RunOptions(as_of=as_of, pull=False, **options)
        )

    def stage(self, stream: Stream, records: list[Any]) -> None:
        self.store.stage("shop", stream, records)

    def forget_marks(self) -> None:
        with self.store.transaction() as conn:
            conn.execute(sa.delete(schema.plannings))

    def ledger(self) -> set[tuple[Any, ...]]:
        t = schema.ledger
        with self.store.engine.connect() as conn:
            query = sa.select(t.c.person_key, t.c.payload_hash, t.c.memberships, t.c.status)
            return {tuple(row) for row in conn.execute(query)}


def side(state_url: str, root: Path) -> Side:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "crmsync.toml"
    path.write_text(config_text(state_url, root), encoding="utf-8")
    return Side(Store(state_url), load_config(path))


def changes(report: RunReport) -> dict[str, int]:
    counts = report.destinations["out"].counts
    return {k: counts[k] for k in ("create", "update", "archive") if counts[k]}


class Shop:
    """Random, reproducible changes to a small store."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.customers: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, Any] = {}
        self.tick = 0
        self.phones = [f"+90532{n:07d}" for n in range(40)]

    def _stamp(self) -> datetime:
        self.tick += 1
        return NOW + timedelta(seconds=self.tick)

    def _customer(self, cid: str) -> Any:
        values = self.customers[cid]
        return customer(cid, values["email"], updated_at=self._stamp(), **values["extra"])

    def new_customers(self, n: int) -> list[Any]:
        out = []
        for _ in range(n):
            cid = f"c{len(self.customers)}"
            roll = self.rng.random()
            email = None if roll < 0.2 else f"{cid}@example.com"
            extra: dict[str, Any] = {}
            if roll < 0.35 or self.rng.random() < 0.2:
                extra["phone"] = self.rng.choice(self.phones)
            if self.rng.random() < 0.5:
                extra["birthday"] = (NOW - timedelta(days=self.rng.randint(7000, 20000))).date()
            if roll < 0.05:  # neither e-mail nor phone
                extra.pop("phone", None)
            self.customers[cid] = {"email": email, "extra": extra}
            out.append(self._customer(cid))
        return out

    def changed_customers(self, n: int) -> list[Any]:
        out = []
        for cid in self.rng.sample(sorted(self.customers), min(n, len(self.customers))):
            values = self.customers[cid]
            kind = self.rng.choice(["email", "phone", "delete", "consent", "link"])
            if kind == "email":  # re-keys the customer, its orders and carts
                values["email"] = f"{cid}.{self.tick}@example.com"
            elif kind == "phone":
                values["extra"]["phone"] = self.rng.choice(self.phones)
            elif kind == "delete":
                values["extra"]["deleted"] = True
            elif kind == "consent":
                values["extra"]["email_consent"] = None
                values["extra"]["sms_consent"] = None
            else:  # a phone-only customer's phone given to a customer with an e-mail
                lonely = [c for c, v in self.customers.items() if v["email"] is None]
                phone = self.customers[self.rng.choice(lonely)]["extra"].get("phone")
                if phone and values["email"]:
                    values["extra"]["phone"] = phone
            out.append(self._customer(cid))
        return out

    def new_orders(self, n: int, as_of: datetime) -> list[Any]:
        out = []
        ids = sorted(self.customers)
        for _ in range(n):
            oid = f"o{len(self.orders)}"
            placed = (NOW - as_of).total_seconds() / 86400 + self.rng.uniform(-3, 120)
            cid = self.rng.choice(ids) if self.rng.random() < 0.9 else None
            email = None if cid else f"guest{self.rng.randint(0, 5)}@example.com"
            made = order(oid, cid, str(self.rng.randint(20, 400)), placed, email=email)
            self.orders[oid] = made
            out.append(made)
        return out

    def cancelled_orders(self, n: int) -> list[Any]:
        out = []
        for oid in self.rng.sample(sorted(self.orders), min(n, len(self.orders))):
            old = self.orders[oid]
            cancelled = order(
                oid,
                old.customer_external_id,
                str(old.total),
                (NOW - old.placed_at).total_seconds() / 86400,
                status=OrderStatus.CANCELLED,
                email=old.email,
                updated_at=self._stamp(),
            )
            self.orders[oid] = cancelled
            out.append(cancelled)
        return out

    def carts(self, n: int, as_of: datetime) -> list[Any]:
        ids = sorted(self.customers)
        base = (NOW - as_of).total_seconds() / 3600
        return [
            cart(
                f"k{self.tick}-{i}",
                self.rng.choice(ids),
                "150",
                base + self.rng.uniform(-2, 40),
                converted=self.rng.random() < 0.2,
            )
            for i in range(n)
        ]


# as_of steps that cross a cart's abandonment (4 h), the 30-hour rule, a day, the 7- and
# 30-day windows, RFM recency and lifecycle limits, and month changes for birthdays
STEPS = [timedelta(0), timedelta(hours=3), timedelta(hours=5), timedelta(days=1, hours=2)]
STEPS += [timedelta(days=8), timedelta(days=31), timedelta(days=95), timedelta(days=200)]


def _both(tmp_path: Path, url_a: str, url_b: str) -> tuple[Side, Side]:
    return side(url_a, tmp_path / "a"), side(url_b, tmp_path / "b")


def _step_and_compare(incremental: Side, full: Side, shop: Shop, steps: list[timedelta]) -> None:
    start = NOW
    for number, step in enumerate(steps):
        as_of = start + step
        batches = [
            (Stream.CUSTOMERS, shop.new_customers(60 if number == 0 else 6)),
            (Stream.ORDERS, shop.new_orders(150 if number == 0 else 10, as_of)),
            (Stream.CARTS, shop.carts(30 if number == 0 else 4, as_of)),
        ]
        if number:
            batches += [
                (Stream.CUSTOMERS, shop.changed_customers(5)),
                (Stream.ORDERS, shop.cancelled_orders(3)),
            ]
        for stream, records in batches:
            incremental.stage(stream, records)
            full.stage(stream, records)
        full.forget_marks()
        mine, theirs = incremental.run(as_of), full.run(as_of)
        assert theirs.planning.startswith("everyone")
        if number:
            assert mine.planning == "incremental"
        if number and step < timedelta(days=2):  # a long step makes most people due
            assert mine.profiles_kept > 0
        assert mine.status == theirs.status == "succeeded"
        assert changes(mine) == changes(theirs), (number, step)
        assert incremental.ledger() == full.ledger(), (number, step)
        assert mine.segments == theirs.segments, (number, step)
        assert mine.profiles == theirs.profiles
        decided = mine.destinations["out"].decisions
        assert sum(decided.values()) == mine.profiles
        assert decided["invalid"] == theirs.destinations["out"].decisions["invalid"]


def test_incremental_runs_end_exactly_where_full_runs_do_on_sqlite(tmp_path: Path) -> None:
    incremental, full = _both(
        tmp_path, f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    )
    _step_and_compare(incremental, full, Shop(seed=1), STEPS)
    incremental.store.close()
    full.store.close()


@pytest.mark.parametrize("seed", [2, 3])
def test_incremental_runs_agree_with_full_runs_for_other_changes(tmp_path: Path, seed: int) -> None:
    incremental, full = _both(
        tmp_path, f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    )
    steps = [timedelta(0), timedelta(hours=4), timedelta(days=7), timedelta(days=30, hours=1)]
    steps += [timedelta(days=61), timedelta(days=181)]
    _step_and_compare(incremental, full, Shop(seed=seed), steps)
    incremental.store.close()
    full.store.close()


@pytest.mark.postgres
def test_incremental_runs_end_exactly_where_full_runs_do_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    import uuid

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    other = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'create schema "{other}"'))
    try:
        url_b = postgres_url.rsplit("%3D", 1)[0] + f"%3D{other}"
        incremental, full = _both(tmp_path, postgres_url, url_b)
        _step_and_compare(incremental, full, Shop(seed=4), STEPS[:6])
        incremental.store.close()
        full.store.close()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop schema "{other}" cascade'))
        admin.dispose()


def test_a_run_with_nothing_new_recomputes_nobody_and_sends_nothing(
    tmp_path: Path, state_url: str
) -> None:
    shop, site = Shop(seed=5), side(state_url, tmp_path)
    site.stage(Stream.CUSTOMERS, shop.new_customers(40))
    site.stage(Stream.ORDERS, shop.new_orders(80, NOW))
    first = site.run(NOW)
    assert first.profiles_kept == 0 and changes(first)
    again = site.run(NOW + timedelta(seconds=1))
    assert again.planning == "incremental"
    assert again.profiles == first.profiles == again.profiles_kept  # nobody recomputed
    assert changes(again) == {}
    assert again.segments == first.segments
    assert (
        again.destinations["out"].decisions["unchanged"]
        + sum(again.destinations["out"].decisions[k] for k in ("invalid", "deleted_unsynced"))
        == again.profiles
    )
    site.store.close()


def test_a_changed_segment_rule_recomputes_everyone(tmp_path: Path) -> None:
    shop, site = Shop(seed=6), side(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    site.stage(Stream.CUSTOMERS, shop.new_customers(30))
    site.stage(Stream.ORDERS, shop.new_orders(50, NOW))
    site.run(NOW)
    toml = (tmp_path / "crmsync.toml").read_text().replace("spent_30d > 300", "spent_30d > 200")
    (tmp_path / "crmsync.toml").write_text(toml)
    site.config = load_config(tmp_path / "crmsync.toml")
    again = site.run(NOW + timedelta(seconds=1))
    assert again.planning == "everyone: configuration changed"
    assert again.profiles_kept == 0 and again.profiles > 0
    site.store.close()


def test_a_dry_run_moves_no_marks(tmp_path: Path) -> None:
    shop, site = Shop(seed=7), side(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    site.stage(Stream.CUSTOMERS, shop.new_customers(30))
    site.run(NOW)

    def marks() -> list[Any]:
        with site.store.engine.connect() as conn:
            return [
                *conn.execute(sa.select(schema.plannings)).all(),
                *conn.execute(sa.select(schema.planned).order_by("person_key")).all(),
            ]

    before = marks()
    site.stage(Stream.CUSTOMERS, shop.changed_customers(10))
    plan = site.run(NOW + timedelta(days=40), dry_run=True)
    assert plan.planning == "incremental"
    assert marks() == before
    site.store.close()


def test_a_customer_leaving_its_key_or_phone_is_recorded_in_touched(state_url: str) -> None:
    store = Store(state_url)
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com", phone="+905320000001")])
    store.stage("shop", Stream.ORDERS, [order("o1", "1", "10", 3)])
    moved = customer("1", "b@example.com", phone="+905320000002", updated_at=NOW)
    store.stage("shop", Stream.CUSTOMERS, [moved])
    with store.engine.connect() as conn:
        touched = set(conn.execute(sa.select(schema.touched.c.person_key)).scalars())
    assert touched == {"e:a@example.com", "p:+905320000001"}
    store.close()


def test_consent_only_unsubscribes_are_seen_by_the_next_run(tmp_path: Path) -> None:
    """A consent change arrives as a re-staged customer: planned again, pushed."""
    shop, site = Shop(seed=8), side(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    site.stage(Stream.CUSTOMERS, shop.new_customers(20))
    site.run(NOW)
    cid = next(c for c, v in shop.customers.items() if v["email"])
    shop.customers[cid]["extra"]["email_consent"] = None
    site.stage(Stream.CUSTOMERS, [shop._customer(cid)])
    again = site.run(NOW + timedelta(seconds=1))
    assert again.profiles - again.profiles_kept >= 1
    assert changes(again) == {"update": 1}
    site.store.close()
