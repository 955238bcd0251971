"""Every look-up, update and delete that staging sends is an index seek, on both engines,
so its cost per record stays flat however large the staging tables grow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from crmsync.records import IssueAction, RecordIssue, Stream
from state import bulk as bulk_module
from state.store import Store
from tests.builders import cart, customer, days_ago, order

Statement = tuple[str, tuple[Any, ...]]
STAGING_TABLES = ("customers", "orders", "order_lines", "carts", "quarantine")


class Recorder:
    """Stands in for the DBAPI connection (and its cursors): notes each statement with its
    first set of parameters, then passes it on."""

    def __init__(self, raw: Any, seen: list[Statement]) -> None:
        self.raw, self.seen = raw, seen

    def execute(self, sql: str, params: Any = (), **options: Any) -> Any:
        self.seen.append((sql, tuple(params)))
        return self.raw.execute(sql, params, **options)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        if rows:
            self.seen.append((sql, tuple(rows[0])))
        return self.raw.executemany(sql, rows)

    def cursor(self) -> Recorder:
        return Recorder(self.raw.cursor(), self.seen)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()

    def __getattr__(self, name: str) -> Any:  # copy(), fetchall() ...
        return getattr(self.raw, name)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Statement]]:
    seen: list[Statement] = []
    for writer in (bulk_module.SqliteBulk, bulk_module.PostgresBulk):
        original = writer.__init__

        def wrapped(self: Any, conn: Any, _original: Any = original) -> None:
            _original(self, conn)
            self.raw = Recorder(self.raw, seen)

        monkeypatch.setattr(writer, "__init__", wrapped)
    yield seen


def stage_others(store: Store) -> None:
    """Enough records that a planner weighs a seek of a few against a scan as it would at
    scale (a batch's look-ups find a small part of the tables)."""
    others = [customer(f"f{i}", f"f{i}@example.com") for i in range(300)]
    store.stage("shop", Stream.CUSTOMERS, others)
    store.stage("shop", Stream.ORDERS, [order(f"fo{i}", f"f{i}", "10", 9) for i in range(300)])
    store.stage("shop", Stream.CARTS, [cart(f"fk{i}", f"f{i}", "10", 9) for i in range(300)])
    for stream in (Stream.CUSTOMERS, Stream.ORDERS, Stream.CARTS):
        bad = [RecordIssue(stream, f"q{i}", IssueAction.QUARANTINED, "bad") for i in range(3000)]
        store.stage("shop", stream, [], bad)


def stage_a_store(store: Store) -> None:
    """Every kind of write staging does: new records, orders before their customer,
    re-keyed customers, replaced order lines, records leaving the quarantine."""
    bad = RecordIssue(Stream.CUSTOMERS, "c9", IssueAction.QUARANTINED, "invalid e-mail", "email")
    store.stage("shop", Stream.CUSTOMERS, [], [bad])
    store.stage("shop", Stream.ORDERS, [order("o1", "c1", "100", 5), order("o2", "c2", "50", 4)])
    store.stage("shop", Stream.CARTS, [cart("k1", "c1", "20", 30)])
    people = [customer(f"c{i}", f"c{i}@example.com") for i in range(1, 10)]
    store.stage("shop", Stream.CUSTOMERS, people)
    moved = customer("c1", "new@example.com", updated_at=days_ago(1))
    store.stage("shop", Stream.CUSTOMERS, [moved])
    changed = order("o1", "c1", "120", 5, categories=("Kitap", "Spor"), updated_at=days_ago(1))
    store.stage("shop", Stream.ORDERS, [changed, order("o3", "c3", "10", 2)])


KEY = re.compile(r"\b(external_id|customer_external_id|order_external_id|record_key)\b")


def _sqlite_seeks(conn: Any, sql: str, params: tuple[Any, ...], key: str) -> list[str]:
    """The plan's steps on staging tables that are not seeks on ``key``."""
    plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)]
    on_tables = [s for s in plan if re.search(rf"\b({'|'.join(STAGING_TABLES)})\b", s)]
    assert on_tables, plan
    return [step for step in on_tables if not re.search(rf"^SEARCH .*\b{key}=\?", step)]


def _postgres_seeks(conn: Any, sql: str, params: tuple[Any, ...], key: str) -> list[str]:
    # the tables are tiny: forbid sequential scans, so that only a missing index shows one
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).scalar()
    nodes, found, wrong = [plan[0]["Plan"]], 0, []
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if node.get("Relation Name") not in STAGING_TABLES or node["Node Type"] == "ModifyTable":
            continue
        found += 1
        condition = node.get("Index Cond") or node.get("Recheck Cond") or ""
        if not re.search(rf"\b{key}\b", condition):
            wrong.append(f"{node['Node Type']} on {node['Relation Name']}: {condition}")
    assert found, plan
    return wrong


def _seeks(store: Store) -> Any:
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:  # statistics, so that the planner picks by them
            conn.exec_driver_sql(f"ANALYZE {', '.join(STAGING_TABLES)}")
        return _postgres_seeks
    return _sqlite_seeks


def test_every_staging_look_up_update_and_delete_seeks_an_index(
    state_url: str, recorded: list[Statement]
) -> None:
    store = Store(state_url)
    stage_others(store)
    recorded.clear()
    stage_a_store(store)
    checked: set[str] = set()
    not_seeks = _seeks(store)
    for sql, params in recorded:
        if not re.match(r"(SELECT|UPDATE|DELETE)\b", sql):
            continue  # inserts (their conflicts are found by primary key), COPY, DDL
        if not re.search(rf"\b(FROM|UPDATE) ({'|'.join(STAGING_TABLES)})\b", sql):
            continue  # the catalog (which tables lack statistics)
        where = sql.split(" WHERE ", 1)[1]
        keys = set(KEY.findall(where)) or {"source"}  # existence checks: by source
        assert len(keys) == 1, sql
        with store.engine.begin() as conn:
            assert not_seeks(conn, sql, params, keys.pop()) == [], sql
        checked.add(sql.split(" WHERE ")[0])
    store.close()
    # the seeks checked: versions and keys, re-keying, lines and quarantine deletes
    versions = r"SELECT (found\.)?external_id, (found\.)?updated_at"
    assert any(re.match(versions, s) for s in checked), checked
    assert any(s.startswith("UPDATE orders") for s in checked), checked
    assert any(s.startswith("UPDATE carts") for s in checked), checked
    assert any(s.startswith("DELETE FROM order_lines") for s in checked), checked
    assert any(s.startswith("DELETE FROM quarantine") for s in checked), checked
    assert any(s.startswith("SELECT 1 FROM orders") for s in checked), checked


def test_the_seek_check_catches_a_look_up_that_an_index_does_not_lead_to(
    state_url: str,
) -> None:
    """The check itself can fail: a look-up by a column that no index starts with (after
    the source) is a scan, on SQLite of the table, on PostgreSQL of a whole index."""
    store = Store(state_url)
    stage_others(store)
    not_seeks = _seeks(store)
    mark = "?" if store.dialect == "sqlite" else "%s"
    sql = f"SELECT external_id FROM orders WHERE source = {mark} AND email = {mark}"
    with store.engine.begin() as conn:
        assert not_seeks(conn, sql, ("shop", "a@example.com"), "email") != []
    store.close()
