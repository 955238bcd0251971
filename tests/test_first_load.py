"""First loads build the staging tables' secondary indexes once at the end of a
stream's load instead of keeping them up row by row (``state.first_load``), on SQLite and
on PostgreSQL: the indexes always come back as the schema declares them, what is read
afterwards is what a load that kept them gives, and on PostgreSQL a load leaves the
indexes alone when another process loads the same table or a transaction holds it."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.config import ProfileSettings
from crmsync.records import Cart, Customer, Order, Stream
from crmsync.sample import SampleSpec, iter_store
from engine.profiles import ProfileContext, iter_profiles
from state import first_load, schema
from state.first_load import restore_indexes
from state.profile_reads import customer_count, key_boundaries
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, cart, customer, days_ago, order
from tests.conftest import POSTGRES_URL, ROOT
from tests.test_stage_plans import (  # noqa: F401
    KEY,
    Statement,
    _postgres_seeks,
    _sqlite_seeks,
    recorded,
)

Record = Customer | Order | Cart
KINDS = {Stream.CUSTOMERS: Customer, Stream.ORDERS: Order, Stream.CARTS: Cart}
# the non-unique secondary indexes the schema declares per engine and staging table
_COMMON = {
    "customers": {
        "ix_customers_email",
        "ix_customers_phone",
        "ix_customers_person",
        "ix_customers_staged",
    },
    "orders": {"ix_orders_customer", "ix_orders_staged"},
    "carts": {"ix_carts_customer", "ix_carts_person", "ix_carts_staged"},
}
DEFERRED = {
    "sqlite": {
        **_COMMON,
        "customers": _COMMON["customers"] | {schema.CUSTOMERS_PROFILE_INDEX},
        "orders": _COMMON["orders"] | {schema.ORDERS_PERSON_INDEX},
    },
    "postgresql": {**_COMMON, "orders": _COMMON["orders"] | {f"{schema.ORDERS_PERSON_INDEX}_pg"}},
}
# a primary key's index, which a first load keeps
PRIMARY = {"sqlite": "sqlite_autoindex_customers_1", "postgresql": "customers_pkey"}
INDEXES = {
    "sqlite": "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'",
    # the definition without the schema's name, to compare stores in several schemas
    "postgresql": "SELECT indexname, tablename, "
    "replace(indexdef, ' ON ' || schemaname || '.', ' ON ') "
    "FROM pg_indexes WHERE schemaname = current_schema()",
}
# PostgreSQL's indexes that are not fit for use (a build that did not finish)
UNFIT = """
SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace = current_schema()::regnamespace
  AND NOT (i.indisvalid AND i.indisready AND i.indislive)
"""


@pytest.fixture
def another_url(state_url: str, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes further empty databases on ``state_url``'s engine, by name: SQLite files
    beside it, PostgreSQL schemas dropped at the end."""
    if state_url.startswith("sqlite"):
        yield lambda name: f"sqlite:///{tmp_path / name}.db"
        return
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make(name: str) -> str:
        made.append(f"t_{uuid.uuid4().hex[:12]}_{name}")
        with admin.connect() as conn:
            conn.execute(sa.text(f'create schema "{made[-1]}"'))
        sep = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{made[-1]}"

    try:
        yield make
    finally:
        with admin.connect() as conn:
            for name in made:
                conn.execute(sa.text(f'drop schema "{name}" cascade'))
        admin.dispose()


def indexes(engine: sa.Engine) -> dict[str, tuple[str, str | None]]:
    """Every index of the database: name -> (table, its definition; on SQLite None for a
    primary key's)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(INDEXES[engine.dialect.name])
        return {name: (table, sql) for name, table, sql in rows}


def names_on(engine: sa.Engine, table: str) -> set[str]:
    return {name for name, (on, _) in indexes(engine).items() if on == table}


def integrity(engine: sa.Engine) -> list[str]:
    """SQLite's own check that every index holds exactly its table's rows; on PostgreSQL,
    whose builds are transactional, that no index was left unfit for use."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
        return list(conn.exec_driver_sql(UNFIT).scalars()) or ["ok"]


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
    state_url: str, another_url: Callable[[str], str]
) -> None:
    records = sample(400)
    fresh = Store(another_url("fresh"))
    declared = indexes(fresh.engine)
    fresh.close()
    kept = Store(another_url("kept"))
    load(kept, records, deferred=False)
    store = Store(state_url)
    dialect = store.dialect

    with store.loading(Stream.CUSTOMERS):
        store.stage("shop", Stream.CUSTOMERS, records[Stream.CUSTOMERS][:150])
        during = indexes(store.engine)
        store.stage("shop", Stream.CUSTOMERS, records[Stream.CUSTOMERS][150:])
    # exactly the customers' non-unique secondary indexes were gone: the primary key's
    # index, the other tables' and the unique one stayed
    assert set(declared) - set(during) == DEFERRED[dialect]["customers"]
    assert set(during) < set(declared)
    assert PRIMARY[dialect] in during and "uq_consent_event" in during
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


def test_a_load_into_a_table_with_rows_keeps_its_indexes_throughout(state_url: str) -> None:
    store = Store(state_url)
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


def test_a_load_that_fails_still_builds_the_indexes_again(state_url: str) -> None:
    store = Store(state_url)
    declared = indexes(store.engine)
    with pytest.raises(RuntimeError, match="the source broke"), store.loading(Stream.ORDERS):
        store.stage("shop", Stream.ORDERS, [order(f"o{i}", "1", "10", 3) for i in range(50)])
        dropped = DEFERRED[store.dialect]["orders"]
        assert not names_on(store.engine, "orders") & dropped
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
    state_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    migrated = Store(state_url)  # the next opening takes the path that skips migrations
    fresh = indexes(migrated.engine)
    dropped = DEFERRED[migrated.dialect]["customers"]
    migrated.close()
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_LOAD, state_url], cwd=ROOT, capture_output=True, check=False
    )
    assert killed.returncode == -9, killed.stderr.decode()
    seen = Store(state_url, migrate=False)  # as the killed process left it
    with seen.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 200
    assert set(fresh) - set(indexes(seen.engine)) == dropped
    seen.close()

    with caplog.at_level(logging.WARNING, logger="crmsync.state"):
        store = Store(state_url)
    assert indexes(store.engine) == fresh
    assert integrity(store.engine) == ["ok"]
    rebuilt = [r.getMessage() for r in caplog.records if r.name == "crmsync.state"]
    assert len(rebuilt) == 1
    assert set(re.findall(r"ix_\w+", rebuilt[0])) == dropped

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crmsync.state"):
        Store(state_url).close()  # nothing missing: nothing built, nothing said
    assert not caplog.records
    store.close()


def test_restoring_asks_one_query_when_no_index_is_missing(state_url: str) -> None:
    store = Store(state_url)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert restore_indexes(store.engine) == []
    assert len(statements) == 1
    assert re.search(r"\b(sqlite_master|pg_indexes)\b", statements[0])
    store.close()


VERSIONS = r"SELECT (found\.)?external_id, (found\.)?updated_at"  # the look-up of versions


def test_staging_inside_a_first_load_seeks_without_the_dropped_indexes(
    state_url: str,
    recorded: list[Statement],  # noqa: F811
) -> None:
    """Everything staging asks while a stream loads without its table's secondary
    indexes is still an index seek: versions by primary key, a customer's re-key of
    orders and carts through theirs (a customers load leaves them), lines by key.

    What a batch asks once the table holds a first batch is checked, as at scale, where
    a batch's ids are a small part of the table (a planner with statistics rightly reads
    a table of 1,000 rows through for 1,000 ids), and only in tables with rows (a look-up
    in an empty one costs nothing, whatever its plan). On PostgreSQL sequential scans are
    forbidden, so that only a missing index shows one."""
    store = Store(state_url)
    not_seeks = _sqlite_seeks if store.dialect == "sqlite" else _postgres_seeks
    seen: set[str] = set()

    def empty(sql: str) -> bool:
        table = re.search(r"\b(?:FROM|UPDATE) (?!unnest\b)(\w+)", sql)
        assert table, sql
        with store.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT 1 FROM {table[1]} LIMIT 1").first() is None

    def check(stream: Stream, first: Sequence[Record], later: Sequence[Record]) -> None:
        with store.loading(stream):
            store.stage("shop", stream, first)
            recorded.clear()
            store.stage("shop", stream, later)
            dropped = DEFERRED[store.dialect][stream.value]
            assert not names_on(store.engine, stream.value) & dropped
            if store.dialect == "postgresql":  # statistics, so that the planner picks by them
                with store.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE customers, orders, order_lines, carts")
            for sql, params in recorded:
                if not re.match(r"(SELECT|UPDATE|DELETE)\b", sql) or "pg_class" in sql:
                    continue  # writes, and the catalog (which tables lack statistics)
                if empty(sql):
                    continue
                keys = set(KEY.findall(sql.split(" WHERE ", 1)[1])) or {"source"}
                with store.engine.begin() as conn:
                    assert not_seeks(conn, sql, params, keys.pop()) == [], sql
                seen.add(sql.split(" WHERE ")[0])

    # orders and carts first (their customers come later), then the customers, whose
    # keys re-key them; a second version of a record within the same load
    new = range(1000, 1020)
    changed = order("o1", "c1", "120", 5, updated_at=days_ago(1))
    orders = [order(f"o{i}", f"c{i}", "100", 5) for i in range(1000)]
    check(Stream.ORDERS, orders, [changed, *(order(f"o{i}", f"c{i}", "100", 5) for i in new)])
    carts = [cart(f"k{i}", f"c{i}", "20", 30) for i in range(1000)]
    check(Stream.CARTS, carts, [cart(f"k{i}", f"c{i}", "20", 30) for i in new])
    people = [customer(f"c{i}", f"c{i}@example.com") for i in range(1000)]
    moved = customer("c1", "new@example.com", updated_at=days_ago(1))
    check(Stream.CUSTOMERS, people, [moved, *(customer(f"c{i}", f"c{i}@x.com") for i in new)])
    store.close()
    assert any(re.match(VERSIONS, s) for s in seen), seen
    assert any(s.startswith("UPDATE orders") for s in seen), seen
    assert any(s.startswith("UPDATE carts") for s in seen), seen
    assert any(s.startswith("DELETE FROM order_lines") for s in seen), seen


# -- PostgreSQL: several processes on one store --------------------------------------------


def test_a_second_load_of_a_table_leaves_its_indexes_to_the_first(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes load one table: the second stages with the indexes as it finds them
    and builds nothing; a store opened meanwhile does not build them under the load; the
    first builds them at its end."""
    monkeypatch.setattr(first_load, "RESTORE_WAIT", "100ms")
    first, second = Store(postgres_url), Store(postgres_url)
    declared = indexes(first.engine)
    dropped = DEFERRED["postgresql"]["customers"]
    with first.loading(Stream.CUSTOMERS):
        first.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com")])
        assert set(declared) - set(indexes(first.engine)) == dropped
        with second.loading(Stream.CUSTOMERS):
            second.stage("other", Stream.CUSTOMERS, [customer("2", "b@example.com")])
        assert set(declared) - set(indexes(first.engine)) == dropped
        with caplog.at_level(logging.INFO, logger="crmsync.state"):
            Store(postgres_url).close()  # restores at its opening
        assert set(declared) - set(indexes(first.engine)) == dropped
        assert "being loaded by another process" in caplog.text
        first.stage("shop", Stream.CUSTOMERS, [customer("3", "c@example.com")])
    assert indexes(first.engine) == declared
    assert integrity(first.engine) == ["ok"]
    # the lock went with the load: a later load of another empty table drops its own
    with second.loading(Stream.CARTS):
        assert not names_on(second.engine, "carts") & DEFERRED["postgresql"]["carts"]
    assert indexes(second.engine) == declared
    first.close()
    second.close()


def test_a_table_that_another_transaction_holds_keeps_its_indexes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropping an index waits for every transaction that read the table, and readers
    queue behind it: past ``LOCK_WAIT`` the load keeps the indexes instead. A load into
    a table with rows does not ask for that lock at all."""
    monkeypatch.setattr(first_load, "LOCK_WAIT", "100ms")
    store = Store(postgres_url)
    declared = indexes(store.engine)
    store.stage("other", Stream.CARTS, [cart("k1", "c1", "20", 30)])

    def held(stream: Stream, records: Sequence[Record]) -> None:
        """Loads ``records`` while another transaction holds their table."""
        caplog.clear()
        with store.engine.connect() as reader, caplog.at_level(logging.INFO, "crmsync.state"):
            reader.exec_driver_sql(f"SELECT count(*) FROM {stream.value}").scalar()
            with store.loading(stream):
                store.stage("shop", stream, records)
                assert indexes(store.engine) == declared
            reader.rollback()

    # empty: waited for the lock, then kept the indexes
    held(Stream.CUSTOMERS, [customer("1", "a@example.com")])
    assert "customers is in use by another transaction" in caplog.text
    held(Stream.CARTS, [cart("k2", "1", "20", 30)])  # not empty: asked for no lock
    assert "in use" not in caplog.text
    assert indexes(store.engine) == declared
    with store.loading(Stream.ORDERS):  # nobody holds orders: its indexes go
        assert not names_on(store.engine, "orders") & DEFERRED["postgresql"]["orders"]
    assert indexes(store.engine) == declared
    store.close()


def test_sqlite_builds_the_indexes_sorting_on_every_cpu_then_gives_the_connection_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each CREATE INDEX of a first load runs with a sort thread per CPU and the small
    build cache; afterwards the connection that built them has the store's own settings
    again (planning's reads on it must not run with a 4 MB cache)."""
    monkeypatch.setattr(first_load, "usable_cpus", lambda: 3)
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    declared = indexes(store.engine)
    with store.engine.connect() as conn:
        own = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("threads", "cache_size")}
    assert own == {"threads": 0, "cache_size": -32768}
    seen: list[tuple[str, int, int, int]] = []  # index, connection, threads, cache

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def note(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        found = re.match(r"CREATE INDEX IF NOT EXISTS (\w+)", statement)
        if found:
            raw = cursor.connection
            settings = [raw.execute(f"PRAGMA {p}").fetchone()[0] for p in ("threads", "cache_size")]
            seen.append((found[1], id(raw), *settings))

    with store.loading(Stream.ORDERS):
        store.stage("shop", Stream.ORDERS, [order(f"o{i}", "1", "10", 3) for i in range(50)])
    assert {name for name, *_ in seen} == DEFERRED["sqlite"]["orders"]
    assert {(threads, cache) for *_, threads, cache in seen} == {(3, -first_load.BUILD_CACHE_KIB)}
    builder = {connection for _, connection, *_ in seen}
    assert len(builder) == 1
    with store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert id(raw) in builder  # the pool gives back the connection that built them
        after = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("threads", "cache_size")}
    assert after == own
    assert indexes(store.engine) == declared
    assert integrity(store.engine) == ["ok"]
    store.close()
