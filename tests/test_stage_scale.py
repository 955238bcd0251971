"""Staging that stays flat as the tables grow, and stays exact.

- On PostgreSQL a table being loaded has no statistics (autovacuum off, or not round
  yet), and the planner then reads a whole source for a batch's ids; so look-ups seek
  the primary key whatever the statistics, and a table that a batch wrote to and that
  has none gets them in that batch (``state.bulk``).
- Records not staged when looked up are copied straight into their table; if another
  process staged one of them meanwhile, they are upserted instead, not refused.
- Batches that move no cursor commit without waiting for the disk; the one that moves
  the cursor waits, and takes every batch before it to the disk with it. A server
  crash cannot be staged in a test: what is checked is which transactions wait, and
  that a pull failing part-way leaves the cursor where it was, the batches before it
  kept, and that the next pull completes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

import state.store
from crmsync.records import Stream
from engine.pull import pull_source
from state import bulk as bulk_module
from state import schema
from state.store import Store
from tests.builders import NOW, customer, days_ago, order
from tests.test_pull_versions import FakeSource
from tests.test_stage_plans import Statement, _postgres_seeks, recorded  # noqa: F401

ROWS = 30_000  # enough that a read of the whole source costs more than a seek per id


def _statistics(store: Store, table: str) -> int:
    sql = "SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = :t"
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"t": table}).scalar_one())


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    opened = Store(postgres_url)
    yield opened
    opened.close()


def test_look_ups_seek_the_primary_key_in_a_table_without_statistics(
    pg_store: Store,
    recorded: list[Statement],  # noqa: F811
) -> None:
    with pg_store.engine.begin() as conn:
        # rows written by SQL, so nothing gathers statistics; and no autovacuum either
        conn.exec_driver_sql("ALTER TABLE customers SET (autovacuum_enabled = false)")
        conn.exec_driver_sql(
            "INSERT INTO customers (source, external_id, person_key, email, email_consent, "
            "sms_consent, deleted, staged_at) SELECT 'shop', i::text, 'e:' || i || '@x.com', "
            f"i || '@x.com', 'none', 'none', false, 1 FROM generate_series(1, {ROWS}) AS i"
        )
    assert _statistics(pg_store, "customers") == 0
    wanted = [str(i) for i in range(ROWS - 2000, ROWS + 2000)]  # half staged, half new
    with pg_store.engine.begin() as conn:
        found = list(
            bulk_module.bulk(conn).select_in(
                schema.customers, ("external_id", "person_key"), "shop", "external_id", wanted
            )
        )
    assert sorted(found) == sorted((i, f"e:{i}@x.com") for i in wanted if int(i) <= ROWS)
    look_ups = [(sql, p) for sql, p in recorded if sql.startswith("SELECT")]
    assert len(look_ups) == 1
    sql, params = look_ups[0]
    with pg_store.engine.begin() as conn:
        assert _postgres_seeks(conn, sql, params, "external_id") == []
    assert _statistics(pg_store, "customers") == 0  # as the planner found it


def test_a_table_staged_without_statistics_gets_them_in_its_first_batch(
    pg_store: Store,
    recorded: list[Statement],  # noqa: F811
) -> None:
    for table in ("customers", "orders", "order_lines"):
        assert _statistics(pg_store, table) == 0
    pg_store.stage("shop", Stream.CUSTOMERS, [customer(f"c{i}", f"c{i}@x.com") for i in range(50)])
    assert _statistics(pg_store, "customers") > 0
    assert _statistics(pg_store, "orders") == 0  # nothing written there yet
    pg_store.stage("shop", Stream.ORDERS, [order(f"o{i}", f"c{i}", "10", 3) for i in range(50)])
    assert _statistics(pg_store, "orders") > 0
    assert _statistics(pg_store, "order_lines") > 0
    analyzed = [sql for sql, _ in recorded if sql.startswith("ANALYZE")]
    assert sorted(analyzed) == ["ANALYZE customers", "ANALYZE order_lines", "ANALYZE orders"]
    recorded.clear()  # later batches find the statistics and gather none
    pg_store.stage("shop", Stream.CUSTOMERS, [customer(f"d{i}", f"d{i}@x.com") for i in range(50)])
    pg_store.stage("shop", Stream.ORDERS, [order(f"p{i}", f"d{i}", "10", 3) for i in range(50)])
    assert [sql for sql, _ in recorded if sql.startswith("ANALYZE")] == []


def test_a_record_another_process_staged_after_the_look_up_is_replaced_not_refused(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(state_url)
    store.stage("shop", Stream.CUSTOMERS, [customer("c1", "old@x.com", updated_at=days_ago(5))])
    # the look-up ran before the other process committed c1: it finds nothing staged
    for writer in (bulk_module.SqliteBulk, bulk_module.PostgresBulk):
        monkeypatch.setattr(writer, "select_in", lambda *_: iter(()))
    newer = customer("c1", "new@x.com", updated_at=days_ago(1))
    stats = store.stage("shop", Stream.CUSTOMERS, [newer, customer("c2", "two@x.com")])
    assert (stats.staged, stats.unchanged) == (2, 0)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(schema.customers.c.external_id, schema.customers.c.email).order_by(
                schema.customers.c.external_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [("c1", "new@x.com"), ("c2", "two@x.com")]
    store.close()


def _pull(store: Store, source: FakeSource) -> Any:
    return pull_source(
        store, "shop", source, until=NOW, lookback=timedelta(minutes=10), batch_size=2
    )


def test_only_the_batch_that_moves_the_cursor_waits_for_the_disk(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    original = state.store.stage_records

    def noted(conn: sa.Connection, source: str, stream: Stream, *args: Any, **kw: Any) -> Any:
        stats = original(conn, source, stream, *args, **kw)
        setting = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
        seen.append((stream.value, str(setting)))
        return stats

    monkeypatch.setattr(state.store, "stage_records", noted)
    _pull(pg_store, FakeSource())  # 5 customers, then 5 orders, in batches of 2
    assert seen == [
        *(("customers", s) for s in ("off", "off", "on")),
        *(("orders", s) for s in ("off", "off", "on")),
    ]
    with pg_store.engine.connect() as conn:  # for this transaction only
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"


def test_a_pull_failing_part_way_leaves_the_cursor_and_the_next_one_completes(
    state_url: str,
) -> None:
    store = Store(state_url)
    source = FakeSource()
    _pull(store, source)
    before = store.cursor("shop", "customers")
    assert before is not None
    later = [customer(f"n{i}", f"n{i}@x.com", updated_at=days_ago(1)) for i in range(4)]
    source.items[Stream.CUSTOMERS] += later
    source.versions[Stream.CUSTOMERS] = "c2"
    # batches [0 1] [2 3] [4 n0] are committed (each once the next one is read), then
    # the read fails after [n1 n2]
    source.fail_after = 8
    with pytest.raises(RuntimeError, match="went away"):
        _pull(store, source)
    assert store.cursor("shop", "customers") == before
    with store.engine.connect() as conn:
        staged = set(conn.execute(sa.select(schema.customers.c.external_id)).scalars())
    assert staged == {"0", "1", "2", "3", "4", "n0"}
    source.fail_after = None
    _pull(store, source)
    assert store.cursor("shop", "customers") == days_ago(1)
    with store.engine.connect() as conn:
        staged = set(conn.execute(sa.select(schema.customers.c.external_id)).scalars())
    assert staged == {"0", "1", "2", "3", "4", "n0", "n1", "n2", "n3"}
    store.close()


def test_ids_go_as_one_string_unless_one_is_empty_or_holds_the_separator() -> None:
    assert bulk_module.text_array(["a", "b"]) == ("string_to_array(%s, chr(31))", "a\x1fb")
    for odd in (["a", ""], ["a\x1fb", "c"], [""]):
        assert bulk_module.text_array(odd) == ("%s::text[]", odd)


def test_odd_ids_are_found_as_they_are(state_url: str) -> None:
    store = Store(state_url)
    ids = ["", "a\x1fb", "a", "b", "x,y", '"q"']
    people = [customer(i, f"c{n}@x.com") for n, i in enumerate(ids)]
    store.stage("shop", Stream.CUSTOMERS, people)
    again = store.stage("shop", Stream.CUSTOMERS, people)
    assert (again.staged, again.unchanged) == (0, len(ids))  # each found by its look-up
    with store.engine.begin() as conn:
        writer = bulk_module.bulk(conn)
        writer.delete_in(schema.customers, {"source": "shop"}, "external_id", ["a\x1fb", ""])
        left = set(conn.execute(sa.select(schema.customers.c.external_id)).scalars())
    assert left == {"a", "b", "x,y", '"q"'}
    store.close()
