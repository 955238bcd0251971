"""The state store on SQLite and PostgreSQL: staging de-duplication, cursors, leases."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.records import IssueAction, OrderStatus, RecordIssue, Stream
from state import schema
from state.migrate import current_revision, head_revision
from state.store import STATISTICS, Store
from tests.builders import NOW, customer, days_ago, order
from tests.conftest import POSTGRES_URL


def test_migrations_create_exactly_the_schema_tables(state_url: str) -> None:
    store = Store(state_url)
    with store.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        names = set(sa.inspect(conn).get_table_names())
    assert set(schema.metadata.tables) <= names
    for table in schema.metadata.tables.values():
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
    store.close()


def _indexes(engine: sa.Engine) -> dict[str, dict[str, list[str]]]:
    """Per table, each index's key columns; an expression as ``<expression>``."""
    if engine.dialect.name == "sqlite":
        return _sqlite_indexes(engine)
    inspector = sa.inspect(engine)
    return {
        table: {
            str(ix["name"]): [str(c) if c else "<expression>" for c in ix["column_names"]]
            for ix in indexes
        }
        for table in schema.metadata.tables
        if (indexes := inspector.get_indexes(table))
    }


def _sqlite_indexes(engine: sa.Engine) -> dict[str, dict[str, list[str]]]:
    """SQLite's own catalogue, which SQLAlchemy's reflection reads without the indexes on
    an expression (``ix_carts_changed``), with a warning."""
    found: dict[str, dict[str, list[str]]] = {}
    with engine.connect() as conn:
        listed = conn.exec_driver_sql(
            "SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ).all()
        for table, name in listed:
            if table not in schema.metadata.tables:
                continue
            # index_xinfo: (seqno, cid, name, desc, coll, key); cid -2 is an expression
            keys = [
                str(row[2]) if row[1] >= 0 else "<expression>"
                for row in conn.exec_driver_sql(f"PRAGMA index_xinfo('{name}')")
                if row[5]
            ]
            found.setdefault(str(table), {})[str(name)] = keys
    return found


def _created_indexes(dialect: str, tmp_path: Path) -> dict[str, dict[str, list[str]]]:
    """The indexes ``schema`` itself creates on a fresh database of ``dialect``."""
    if dialect == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'reference.db'}")
        schema.metadata.create_all(engine)
        try:
            return _indexes(engine)
        finally:
            engine.dispose()
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"r_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'create schema "{name}"'))
    engine = sa.create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={name}"})
    try:
        schema.metadata.create_all(engine)
        return _indexes(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop schema "{name}" cascade'))
        admin.dispose()


def test_migrations_create_exactly_the_schema_indexes(state_url: str, tmp_path: Path) -> None:
    store = Store(state_url)
    migrated = _indexes(store.engine)
    expected = _created_indexes(store.engine.dialect.name, tmp_path)
    store.close()
    assert migrated == expected
    if state_url.startswith("sqlite"):  # the profile stream's covering indexes
        assert schema.CUSTOMERS_PROFILE_INDEX in migrated["customers"]
        assert schema.ORDERS_PERSON_INDEX in migrated["orders"]
    assert "<expression>" in migrated["carts"]["ix_carts_changed"]


def test_postgresql_connections_plan_each_statement_for_its_parameters(
    postgres_url: str,
) -> None:
    """A generic plan kept from an empty staging table would scan every later batch."""
    store = Store(postgres_url)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("show plan_cache_mode")).scalar() == "force_custom_plan"
        schema_name = postgres_url.rsplit("search_path%3D", 1)[1]
        assert conn.execute(sa.text("show search_path")).scalar() == schema_name  # URL kept
    store.close()


def test_newer_versions_replace_older_ones_and_older_never_win(state_url: str) -> None:
    store = Store(state_url)
    new = customer("1", "a@example.com", first_name="Yeni", updated_at=days_ago(1))
    old = customer("1", "a@example.com", first_name="Eski", updated_at=days_ago(5))
    stats = store.stage("shop", Stream.CUSTOMERS, [new])
    assert stats.staged == 1
    stats = store.stage("shop", Stream.CUSTOMERS, [old, new])  # a re-read with a stale copy
    assert stats.staged == 0
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.customers.c.first_name)).all()
    assert rows == [("Yeni",)]
    store.close()


def test_a_second_change_within_the_same_second_is_staged_and_a_same_reread_is_not(
    state_url: str,
) -> None:
    """Sources that keep whole seconds (WooCommerce) can change a record twice in one."""
    store = Store(state_url)
    at = days_ago(1).replace(microsecond=0)
    paid = order("o1", "1", "300", 3, updated_at=at)
    refunded = order("o1", "1", "300", 3, updated_at=at, status=OrderStatus.REFUNDED)
    assert store.stage("shop", Stream.ORDERS, [paid]).staged == 1
    assert store.stage("shop", Stream.ORDERS, [paid]).unchanged == 1  # a re-read: no write
    stats = store.stage("shop", Stream.ORDERS, [refunded])  # same second, new content
    assert (stats.staged, stats.unchanged) == (1, 0)
    # within one second there is no telling which version is newer but the read order:
    # the last one read wins, in a batch as across batches
    assert store.stage("shop", Stream.ORDERS, [refunded, paid]).staged == 1
    with store.engine.connect() as conn:
        status = conn.execute(sa.select(schema.orders.c.status)).scalar_one()
    assert status == "paid"

    store.stage("shop", Stream.ORDERS, [refunded])
    older = order("o1", "1", "999", 3, updated_at=at - timedelta(seconds=1))
    assert store.stage("shop", Stream.ORDERS, [older]).staged == 0  # older never wins
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(schema.orders.c.status, schema.orders.c.total_minor)).one()
    assert tuple(row) == ("refunded", 30000)
    store.close()


def test_records_without_times_are_restaged_only_when_their_content_changes(
    state_url: str,
) -> None:
    """Full exports carry no updated_at: each re-read is compared by content."""
    store = Store(state_url)
    first = customer("1", "a@example.com", first_name="Ayşe", updated_at=None)
    assert store.stage("shop", Stream.CUSTOMERS, [first]).staged == 1
    assert store.stage("shop", Stream.CUSTOMERS, [first]).staged == 0
    renamed = customer("1", "a@example.com", first_name="Ayşegül", updated_at=None)
    assert store.stage("shop", Stream.CUSTOMERS, [renamed]).staged == 1
    with store.engine.connect() as conn:
        names = conn.execute(sa.select(schema.customers.c.first_name)).scalars().all()
    assert names == ["Ayşegül"]
    store.close()


def test_order_lines_are_replaced_with_their_order(state_url: str) -> None:
    store = Store(state_url)
    first = order("o1", "1", "300", 3, categories=("Kitap", "Oyuncak", "Spor"))
    store.stage("shop", Stream.ORDERS, [first])
    changed = order("o1", "1", "100", 3, categories=("Kitap",), updated_at=days_ago(1))
    store.stage("shop", Stream.ORDERS, [changed])
    with store.engine.connect() as conn:
        lines = conn.execute(sa.select(schema.order_lines.c.category)).scalars().all()
        total = conn.execute(sa.select(schema.orders.c.total_minor)).scalar()
    assert lines == ["Kitap"]
    assert total == 10000  # minor units
    store.close()


def test_cursor_moves_only_with_the_batch_that_carries_it(state_url: str) -> None:
    store = Store(state_url)
    assert store.cursor("shop", "customers") is None
    store.stage("shop", Stream.CUSTOMERS, [customer("1", "a@example.com")])
    assert store.cursor("shop", "customers") is None
    store.stage("shop", Stream.CUSTOMERS, [customer("2", "b@example.com")], cursor=NOW)
    assert store.cursor("shop", "customers") == NOW
    store.reset_cursors(["shop"], to=NOW - timedelta(days=3))
    assert store.cursor("shop", "customers") == NOW - timedelta(days=3)
    store.close()


def test_quarantine_keeps_one_row_per_record_and_clears_when_fixed(state_url: str) -> None:
    store = Store(state_url)
    issue = RecordIssue(Stream.CUSTOMERS, "9", IssueAction.QUARANTINED, "invalid e-mail", "email")
    store.stage("shop", Stream.CUSTOMERS, [], [issue])
    store.stage("shop", Stream.CUSTOMERS, [], [issue])
    rows = store.quarantine(["shop"])
    assert [(r["external_id"], r["times_seen"]) for r in rows] == [("9", 2)]
    store.stage("shop", Stream.CUSTOMERS, [customer("9", "fixed@example.com")])
    assert store.quarantine(["shop"]) == []
    store.close()


@pytest.mark.parametrize("quarantined", [3, 40], ids=["fewer-than-the-batch", "more"])
def test_a_batch_clears_exactly_its_own_records_from_the_quarantine(
    state_url: str, quarantined: int
) -> None:
    """Staging clears the quarantined rows of the records it staged, whether the stream's
    quarantine is smaller than the batch (read and matched) or larger (deleted by id):
    not another stream's, another source's, nor a record's correction note."""
    store = Store(state_url)
    bad = [
        RecordIssue(Stream.CUSTOMERS, f"c{i}", IssueAction.QUARANTINED, "invalid e-mail", "email")
        for i in range(quarantined)
    ]
    store.stage("shop", Stream.CUSTOMERS, [], bad)
    store.stage("other", Stream.CUSTOMERS, [], bad[:1])
    store.stage(
        "shop", Stream.ORDERS, [], [RecordIssue(Stream.ORDERS, "c0", IssueAction.QUARANTINED, "x")]
    )
    note = RecordIssue(Stream.CUSTOMERS, "c1", IssueAction.CORRECTED, "phone dropped", "phone")
    # five records staged: c2 stays quarantined in the small quarantine, which is read
    fixed = [customer(f"c{i}", f"c{i}@example.com") for i in (0, 1, 7, 8, 9)]
    store.stage("shop", Stream.CUSTOMERS, fixed, [note])
    left = {
        (r["source"], r["stream"], r["record_key"], r["action"])
        for r in store.quarantine(limit=100)
    }
    cleared = {0, 1, 7, 8, 9}
    still = {
        ("shop", "customers", f"c{i}", "quarantined")
        for i in range(quarantined)
        if i not in cleared
    }
    assert left == still | {
        ("other", "customers", "c0", "quarantined"),
        ("shop", "orders", "c0", "quarantined"),
        ("shop", "customers", "c1", "corrected"),
    }
    store.close()


def test_a_lease_is_exclusive_until_released(state_url: str) -> None:
    store = Store(state_url)
    holder = store.acquire_lease("pipeline:demo", 60, holder="a")
    assert holder == "a"
    assert store.acquire_lease("pipeline:demo", 60, holder="b") is None
    store.release_lease("pipeline:demo", "a")
    assert store.acquire_lease("pipeline:demo", 60, holder="b") == "b"
    store.close()


def test_migration_0002_gives_staged_orders_and_carts_their_person_keys(state_url: str) -> None:
    from alembic import command

    from state.migrate import alembic_config

    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "insert into customers (source, external_id, person_key, email, email_consent,"
                " sms_consent, deleted, staged_at)"
                " values ('shop', '1', 'e:a@example.com', 'a@example.com', 'none', 'none',"
                " false, 0)"
            )
        )
        order = (
            "insert into orders (source, external_id, customer_external_id, email, placed_at,"
            " status, currency, total_minor, discount_minor, refunded_minor, item_count,"
            " staged_at) values ('shop', :id, :cid, :email, 0, :status, 'TRY', 1000, :discount,"
            " 300, 1, 0)"
        )
        for oid, cid, email, status, discount in (
            ("o1", "1", "other@example.com", "paid", 0),  # its customer's key wins
            ("o2", None, "guest@example.com", "cancelled", 50),
            ("o3", "9", None, "refunded", 0),
            ("o4", None, None, "paid", 0),  # nobody's
        ):
            conn.execute(
                sa.text(order),
                {"id": oid, "cid": cid, "email": email, "status": status, "discount": discount},
            )
        conn.execute(
            sa.text(
                "insert into carts (source, external_id, customer_external_id, currency,"
                " value_minor, item_count, converted, staged_at)"
                " values ('shop', 'k1', '1', 'TRY', 500, 1, false, 0)"
            )
        )
    engine.dispose()

    store = Store(state_url)  # migrates to the head revision
    with store.engine.connect() as conn:
        orders = conn.execute(
            sa.select(
                schema.orders.c.external_id,
                schema.orders.c.person_key,
                schema.orders.c.counted,
                schema.orders.c.net_minor,
                schema.orders.c.discounted,
            ).order_by(schema.orders.c.external_id)
        ).all()
        cart_key = conn.execute(sa.select(schema.carts.c.person_key)).scalar()
    assert [tuple(r) for r in orders] == [
        ("o1", "e:a@example.com", True, 700, False),
        ("o2", "e:guest@example.com", False, 700, True),
        ("o3", "s:shop:9", False, 700, False),
        ("o4", None, True, 700, False),
    ]
    assert cart_key == "e:a@example.com"
    store.close()


def test_migration_0005_keeps_acknowledged_tags_as_memberships_and_adds_in_flight(
    state_url: str,
) -> None:
    from alembic import command

    from state.migrate import alembic_config

    engine = sa.create_engine(state_url)
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        conn.execute(
            sa.text(
                "insert into ledger (destination, person_key, payload_hash, segments, status,"
                " acked_at) values ('mc', 'e:a@example.com', 'h', :tags, 'synced', 1)"
            ),
            {"tags": "crm-new\ncrm-vip"},
        )
    engine.dispose()

    store = Store(state_url)  # migrates to the head revision
    with store.engine.connect() as conn:
        kept = conn.execute(sa.select(schema.ledger.c.person_key, schema.ledger.c.memberships))
        assert [tuple(r) for r in kept] == [("e:a@example.com", "crm-new\ncrm-vip")]
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.in_flight)).scalar() == 0
    store.close()


def test_the_newest_revision_by_numbering_is_alembics_head() -> None:
    from state.migrate import newest_revision

    assert newest_revision() == head_revision()


def test_a_current_database_is_not_migrated_again_and_an_old_one_is(tmp_path: Path) -> None:
    from state.migrate import upgrade
    from tests.rewind import rewind

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store(url)
    head = head_revision()
    assert upgrade(store.engine) == (head, head)
    rewind(store.engine, "0007")
    assert upgrade(store.engine) == ("0007", head)  # 0008 ran again
    assert "source_versions" in sa.inspect(store.engine).get_table_names()
    store.close()


def test_postgresql_statistics_are_refreshed_after_a_large_write(postgres_url: str) -> None:
    """A store just filled has no statistics where autovacuum is off or has not come round:
    the planner then joins a scope of keys to the orders by a nested loop over both."""
    from state.store import ANALYZE_AFTER

    store = Store(postgres_url)

    def analyzed() -> bool:
        with store.engine.connect() as conn:
            query = sa.text(
                "SELECT last_analyze FROM pg_stat_user_tables "
                "WHERE relname = 'orders' AND schemaname = current_schema()"
            )
            return conn.execute(query).scalar() is not None

    store.refresh_statistics("staging", changed=ANALYZE_AFTER - 1)
    assert not analyzed()  # a small write leaves them alone
    store.refresh_statistics("staging", changed=ANALYZE_AFTER)
    assert analyzed()
    store.close()


def test_postgresql_statistics_that_are_right_are_not_gathered_again(postgres_url: str) -> None:
    """Once a table's statistics count its rows, a write of a small share of them leaves
    them as they are (a 1 %-changed run analyzed every staging table for 2 s); a write of
    more than ``ANALYZE_SHARE`` of them, or a table never analyzed, is analyzed."""
    from state.store import ANALYZE_AFTER, ANALYZE_SHARE

    store = Store(postgres_url)
    rows = 20 * ANALYZE_AFTER

    def analyses(table: str) -> int:
        with store.engine.connect() as conn:
            query = sa.text(
                "SELECT analyze_count FROM pg_stat_user_tables "
                "WHERE relname = :table AND schemaname = current_schema()"
            )
            return int(conn.execute(query, {"table": table}).scalar_one())

    with store.transaction() as conn:
        conn.execute(sa.insert(schema.touched), [{"person_key": f"e:{i}"} for i in range(rows)])
    store.refresh_statistics("staging", changed=rows)
    assert analyses("touched") == 1 and analyses("orders") == 1  # both never analyzed

    small = int(ANALYZE_SHARE * rows)  # no more than the share of touched's rows
    assert small >= ANALYZE_AFTER
    store.refresh_statistics("staging", changed=small)
    assert analyses("touched") == 1  # right as they are
    assert analyses("orders") == 2  # empty when analyzed: any write is a large share
    store.refresh_statistics("staging", changed=small + 1)
    assert analyses("touched") == 2
    store.close()


def test_postgresql_tables_are_analyzed_side_by_side(postgres_url: str) -> None:
    """Each ANALYZE keeps one server process busy: a first sync's staging tables are
    analyzed ``ANALYZE_AT_ONCE`` at a time, not one after another (two of them must be
    under way together to pass the barrier)."""
    from state.store import ANALYZE_AFTER, ANALYZE_AT_ONCE

    store = Store(postgres_url)
    together = threading.Barrier(ANALYZE_AT_ONCE, timeout=10)
    analyzed: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("ANALYZE"):
            analyzed.append(statement.split()[1])
            if len(analyzed) <= ANALYZE_AT_ONCE:
                together.wait()  # broken (and the test failed) if the other never starts

    sa.event.listen(store.engine, "before_cursor_execute", before)
    try:
        store.refresh_statistics("staging", changed=ANALYZE_AFTER)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", before)
        store.close()
    assert sorted(analyzed) == sorted(STATISTICS["staging"])


@pytest.mark.postgres
def test_two_processes_starting_on_an_empty_postgresql_database_both_find_it_migrated(
    postgres_url: str,
) -> None:
    """Two hosts' first start at once: one creates the schema, the other waits for it
    (before, the second failed creating tables the first had just made)."""
    import threading

    from state.migrate import upgrade

    engines = [sa.create_engine(postgres_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[object] = []

    def start(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            results.append(upgrade(engine)[1])
        except Exception as exc:  # collected: the assertion names it
            results.append(exc)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert results == [head_revision(), head_revision()]


def _file_alone(database: Path, copy: Path) -> list[str]:
    """The customers a copy of the database file holds without its write-ahead log."""
    copy.write_bytes(database.read_bytes())
    engine = sa.create_engine(f"sqlite:///{copy}")
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(schema.customers.c.external_id)).scalars())
    finally:
        engine.dispose()


def test_a_checkpoint_copies_what_was_written_into_the_sqlite_file(tmp_path: Path) -> None:
    """What a run wrote sits in the write-ahead log until a checkpoint copies it into the
    file (else the close does, as the process ends); ``checkpoint`` does it while the
    store stays open, and says how much it copied."""
    database = tmp_path / "state.db"
    store = Store(f"sqlite:///{database}")
    try:
        store.checkpoint()  # what migrating wrote
        store.stage("shop", Stream.CUSTOMERS, [customer("c1", "ayse@example.com")])
        assert _file_alone(database, tmp_path / "before.db") == []
        pages, copied = store.checkpoint() or (0, 0)
        assert pages > 0 and copied == pages
        assert _file_alone(database, tmp_path / "after.db") == ["c1"]
    finally:
        store.close()


def test_no_checkpoint_where_there_is_no_log_file(state_url: str) -> None:
    memory = Store("sqlite://")
    try:
        assert memory.checkpoint() is None  # its one connection stays on its own thread
    finally:
        memory.close()
    if state_url.startswith("postgresql"):
        server = Store(state_url)
        try:
            assert server.checkpoint() is None
        finally:
            server.close()
