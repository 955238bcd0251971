"""First loads on SQLite build the staging tables' secondary indexes once at the end of a
stream's load instead of keeping them up row by row (``state.first_load``): the indexes
always come back as the schema declares them, and what is read afterwards is what a load
that kept them gives."""

from __future__ import annotations

import logging
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.config import ProfileSettings
from crmsync.profiles import ProfileContext, iter_profiles
from crmsync.records import Cart, Customer, Order, Stream
from crmsync.sample import SampleSpec, iter_store
from state import schema
from state.first_load import restore_indexes
from state.profile_reads import customer_count, key_boundaries
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, cart, customer, days_ago, order
from tests.conftest import ROOT
from tests.test_stage_plans import KEY, Statement, _sqlite_seeks, recorded  # noqa: F401

Record = Customer | Order | Cart
STAGING = ("customers", "orders", "carts")
KINDS = {Stream.CUSTOMERS: Customer, Stream.ORDERS: Order, Stream.CARTS: Cart}
# the non-unique secondary indexes the schema declares on SQLite, per staging table
DEFERRED = {
    "customers": {
        "ix_customers_email",
        "ix_customers_phone",
        "ix_customers_person",
        "ix_customers_staged",
        schema.CUSTOMERS_PROFILE_INDEX,
    },
    "orders": {"ix_orders_customer", "ix_orders_staged", schema.ORDERS_PERSON_INDEX},
    "carts": {"ix_carts_customer", "ix_carts_person", "ix_carts_staged"},
}


def sqlite_url(tmp_path: Path, name: str = "state") -> str:
    return f"sqlite:///{tmp_path / name}.db"


def indexes(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    """Every index of the database: name -> (table, its SQL; None for a primary key's)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"
        )
        return {name: (table, sql) for name, table, sql in rows}


def names_on(engine: sa.Engine, table: str) -> set[str]:
    return {name for name, (on, _) in indexes(engine).items() if on == table}


def integrity(engine: sa.Engine) -> list[str]:
    """SQLite's own check that every index holds exactly its table's rows."""
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]


def sample(customers: int) -> dict[Stream, list[Record]]:
    """The sample store's records per stream (customers with phones shared, guests...)."""
    records: dict[Stream, list[Record]] = {stream: [] for stream in KINDS}
    for record in iter_store(SampleSpec(customers=customers)):
        for stream, kind in KINDS.items():
            if isinstance(record, kind):
                records[stream].append(record)
    return records


def batches(records: Sequence[Record], size: int) -> Iterator[Sequence[Record]]:
    for start in range(0, len(records), size):
        yield records[start : start + size]


def load(store: Store, records: dict[Stream, list[Record]], *, deferred: bool) -> None:
    """Stages every stream in several batches, as a pull does: customers, orders, carts."""
    for stream, staged in records.items():
        loading: AbstractContextManager[None] = store.loading(stream) if deferred else nullcontext()
        with loading:
            for batch in batches(staged, 150):
                store.stage("shop", stream, batch)


def profiles(store: Store) -> list[dict[str, Any]]:
    ctx = ProfileContext(("shop",), ("shop",), "TRY", to_ms(NOW) or 0, ProfileSettings())
    with store.engine.connect() as conn:
        return list(iter_profiles(conn, ctx))


def test_a_first_load_builds_the_schemas_indexes_at_its_end_and_reads_the_same(
    tmp_path: Path,
) -> None:
    records = sample(400)
    fresh = Store(sqlite_url(tmp_path, "fresh"))
    declared = indexes(fresh.engine)
    fresh.close()
    kept = Store(sqlite_url(tmp_path, "kept"))
    load(kept, records, deferred=False)
    store = Store(sqlite_url(tmp_path))

    with store.loading(Stream.CUSTOMERS):
        store.stage("shop", Stream.CUSTOMERS, records[Stream.CUSTOMERS][:150])
        during = indexes(store.engine)
        store.stage("shop", Stream.CUSTOMERS, records[Stream.CUSTOMERS][150:])
    # exactly the customers' non-unique secondary indexes were gone: the primary key's
    # index, the other tables' and the unique one stayed
    assert set(declared) - set(during) == DEFERRED["customers"]
    assert set(during) < set(declared)
    assert "sqlite_autoindex_customers_1" in during and "uq_consent_event" in during
    assert indexes(store.engine) == declared
    load(store, {s: records[s] for s in (Stream.ORDERS, Stream.CARTS)}, deferred=True)

    assert indexes(store.engine) == declared  # same names, tables and definitions
    assert integrity(store.engine) == ["ok"]
    assert profiles(store) == profiles(kept)
    with store.engine.connect() as conn, kept.engine.connect() as other:
        assert customer_count(conn, ["shop"]) == customer_count(other, ["shop"]) == 400
        assert key_boundaries(conn, ["shop"], 4) == key_boundaries(other, ["shop"], 4)
    store.close()
    kept.close()


def test_a_load_into_a_table_with_rows_keeps_its_indexes_throughout(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    declared = indexes(store.engine)
    # a row of another source is enough: the table is not empty
    store.stage("other", Stream.CUSTOMERS, [customer("x1", "x1@example.com")])
    with store.loading(Stream.CUSTOMERS):
        store.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com")])
        assert indexes(store.engine) == declared
        store.stage("shop", Stream.CUSTOMERS, [customer("2", "b@example.com")])
        assert indexes(store.engine) == declared
    assert indexes(store.engine) == declared
    store.close()


def test_a_load_that_fails_still_builds_the_indexes_again(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    declared = indexes(store.engine)
    with pytest.raises(RuntimeError, match="the source broke"), store.loading(Stream.ORDERS):
        store.stage("shop", Stream.ORDERS, [order(f"o{i}", "1", "10", 3) for i in range(50)])
        assert not names_on(store.engine, "orders") & DEFERRED["orders"]
        raise RuntimeError("the source broke")
    assert indexes(store.engine) == declared
    assert integrity(store.engine) == ["ok"]
    store.close()


_KILLED_LOAD = """
import os, signal, sys
from crmsync.records import Stream
from state.store import Store
from tests.builders import customer

store = Store(sys.argv[1])
with store.loading(Stream.CUSTOMERS):
    people = [customer(f"{i}", f"{i}@example.com") for i in range(200)]
    store.stage("shop", Stream.CUSTOMERS, people)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_store_opened_after_a_killed_load_builds_the_indexes_it_left_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url(tmp_path)
    migrated = Store(url)  # the next opening takes the path that skips migrations
    fresh = indexes(migrated.engine)
    migrated.close()
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_LOAD, url], cwd=ROOT, capture_output=True, check=False
    )
    assert killed.returncode == -9, killed.stderr.decode()
    with sqlite3.connect(tmp_path / "state.db") as raw:  # as the killed process left it
        left = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert raw.execute("SELECT count(*) FROM customers").fetchone() == (200,)
    assert set(fresh) - left == DEFERRED["customers"]

    with caplog.at_level(logging.WARNING, logger="crmsync.state"):
        store = Store(url)
    assert indexes(store.engine) == fresh
    assert integrity(store.engine) == ["ok"]
    rebuilt = [r.getMessage() for r in caplog.records if r.name == "crmsync.state"]
    assert len(rebuilt) == 1
    assert set(re.findall(r"ix_\w+", rebuilt[0])) == DEFERRED["customers"]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crmsync.state"):
        Store(url).close()  # nothing missing: nothing built, nothing said
    assert not caplog.records
    store.close()


def test_restoring_asks_one_query_when_no_index_is_missing(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path))
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert restore_indexes(store.engine) == []
    assert len(statements) == 1 and "sqlite_master" in statements[0]
    store.close()


def test_staging_inside_a_first_load_seeks_without_the_dropped_indexes(
    tmp_path: Path,
    recorded: list[Statement],  # noqa: F811
) -> None:
    """Everything staging asks while a stream loads without its table's secondary
    indexes is still an index seek: versions by primary key, a customer's re-key of
    orders and carts through theirs (a customers load leaves them), lines by key."""
    store = Store(sqlite_url(tmp_path))
    seen: set[str] = set()

    def check(stream: Stream, writes: Sequence[Sequence[Record]]) -> None:
        recorded.clear()
        with store.loading(stream):
            for batch in writes:
                store.stage("shop", stream, batch)
            assert not names_on(store.engine, stream.value) & DEFERRED[stream.value]
            for sql, params in recorded:
                if not re.match(r"(SELECT|UPDATE|DELETE)\b", sql):
                    continue
                keys = set(KEY.findall(sql.split(" WHERE ", 1)[1])) or {"source"}
                with store.engine.connect() as conn:
                    assert _sqlite_seeks(conn, sql, params, keys.pop()) == [], sql
                seen.add(sql.split(" WHERE ")[0])

    # orders and carts first (their customers come later), then the customers, whose
    # keys re-key them; a second version of a record within the same load
    changed = order("o1", "c1", "120", 5, updated_at=days_ago(1))
    check(Stream.ORDERS, [[order(f"o{i}", f"c{i}", "100", 5) for i in range(300)], [changed]])
    check(Stream.CARTS, [[cart(f"k{i}", f"c{i}", "20", 30) for i in range(300)]])
    people = [customer(f"c{i}", f"c{i}@example.com") for i in range(300)]
    moved = customer("c1", "new@example.com", updated_at=days_ago(1))
    check(Stream.CUSTOMERS, [people, [moved]])
    store.close()
    assert any(s.startswith("SELECT external_id, updated_at") for s in seen), seen
    assert any(s.startswith("UPDATE orders") for s in seen), seen
    assert any(s.startswith("UPDATE carts") for s in seen), seen
    assert any(s.startswith("DELETE FROM order_lines") for s in seen), seen


def test_postgresql_keeps_its_indexes(postgres_url: str) -> None:
    store = Store(postgres_url)

    def listed() -> set[str]:
        query = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        with store.engine.connect() as conn:
            return set(conn.exec_driver_sql(query).scalars())

    declared = listed()
    assert {"ix_customers_email", "ix_orders_person_pg"} <= declared
    with store.loading(Stream.CUSTOMERS):  # an empty table
        store.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com")])
        assert listed() == declared
    assert listed() == declared
    assert restore_indexes(store.engine) == []
    store.close()
