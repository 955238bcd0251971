"""A long-lived process keeps one engine per state database (``state.engines``): its runs
share the engine (opened once; every run still checks the schema, and refuses one a newer
crmsync wrote), a second run opens no new connection, runs at once never wait for each
other's connections, a database in memory is never kept, and closing the kept engines
closes their connections (``serve`` does at its end). The statements a run reads
profiles with are compiled once per engine, not on every run."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import state.store as store_module
from crmsync.config import ProfileSettings
from crmsync.errors import StateError
from crmsync.profile_scope import EVERYONE, ProfileContext
from engine.resolve import load_config
from service.runner import Runner
from service.stop import StopFlag
from state.engines import KeptEngines
from state.migrate import upgrade
from state.profile_reads import GROUP_QUERIES, linked_away_query
from state.store import Store
from tests.e2e import make_site
from tests.test_serve_observe import eventually


class Seen:
    def notify(self, event: object) -> None:
        del event


@pytest.fixture
def connects() -> Iterator[list[str]]:
    """Every database connection any engine opens while the test runs."""
    opened: list[str] = []

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        del dbapi_connection, record
        opened.append(threading.current_thread().name)

    sa.event.listen(sa.Engine, "connect", on_connect)
    try:
        yield opened
    finally:
        sa.event.remove(sa.Engine, "connect", on_connect)


def test_stores_of_one_url_share_one_engine_and_each_checks_the_schema(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []

    def counted(engine: sa.Engine) -> tuple[str | None, str]:
        checks.append(engine.url.render_as_string())
        return upgrade(engine)

    monkeypatch.setattr(store_module, "upgrade", counted)
    kept = KeptEngines()
    try:
        first = Store(state_url, kept=kept)
        first.close()  # a run's end: the engine stays open for the next one
        second = Store(state_url, kept=kept)
        assert second.engine is first.engine and len(kept) == 1
        assert len(checks) == 2  # every run checks (and would migrate) the schema
        with second.engine.connect() as conn:
            assert conn.execute(sa.text("select count(*) from runs")).scalar() == 0
        second.close()
        alone = Store(state_url)  # not kept: an engine of its own, as before
        assert alone.engine is not first.engine
        alone.close()
    finally:
        kept.close()


def test_a_kept_engine_still_refuses_a_schema_a_newer_crmsync_wrote(state_url: str) -> None:
    """Two `serve` processes on one database, one upgraded: the older one's next run stops
    at the schema, however long it has kept its engine."""
    kept = KeptEngines()
    try:
        Store(state_url, kept=kept).close()
        with Store(state_url, kept=kept).transaction() as conn:
            conn.execute(sa.text("update alembic_version set version_num = '9999'"))
        with pytest.raises(StateError):
            Store(state_url, kept=kept)
    finally:
        kept.close()


def test_an_engine_that_failed_to_open_is_not_kept(tmp_path: Path) -> None:
    kept = KeptEngines()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'state.db'}"  # its folder cannot be made
    with pytest.raises(Exception):  # noqa: B017 - whatever the file system says
        Store(url, kept=kept)
    assert len(kept) == 0
    blocker.unlink()
    store = Store(url, kept=kept)  # the next run tries again, and it opens
    assert len(kept) == 1
    store.close()
    kept.close()


def test_a_second_run_opens_no_new_connection(
    state_url: str, tmp_path: Path, connects: list[str]
) -> None:
    config = load_config(make_site(tmp_path, state_url, customers=40).config)
    spec = config.pipelines["main"]
    kept = KeptEngines()
    try:
        runner = Runner(Seen(), StopFlag(), engines=kept)
        first = runner.run("", config, spec)
        assert first is not None and first.status == "succeeded"
        assert connects, "the first run opens the database"
        connects.clear()
        second = runner.run("", config, spec)
        assert second is not None and second.status == "succeeded"
        assert second.run_id != first.run_id
        assert connects == []
    finally:
        kept.close()
    # each run on an engine of its own (as before) connects again: what is saved above
    alone = Runner(Seen(), StopFlag())
    assert alone.run("", config, spec) is not None
    connects.clear()
    third = alone.run("", config, spec)
    assert third is not None and third.status == "succeeded"
    assert connects


def test_runs_at_once_never_wait_for_each_others_connections(state_url: str) -> None:
    """More connections out at once than SQLAlchemy's default pool allows (15): none waits."""
    kept = KeptEngines()
    held = 24
    together = threading.Barrier(held, timeout=20)
    failures: list[BaseException] = []

    def hold(engine: sa.Engine) -> None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
                together.wait()  # every thread holds its connection here at once
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    try:
        engine = Store(state_url, kept=kept).engine
        threads = [threading.Thread(target=hold, args=(engine,)) for _ in range(held)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert failures == []
    finally:
        kept.close()


def test_a_database_in_memory_is_never_kept() -> None:
    kept = KeptEngines()
    one, two = Store("sqlite://", kept=kept), Store("sqlite://", kept=kept)
    assert one.engine is not two.engine and len(kept) == 0
    one.close()
    two.close()


@pytest.mark.postgres
def test_closing_the_kept_engines_closes_their_connections(postgres_url: str) -> None:
    name = f"crmsync_kept_{uuid.uuid4().hex[:8]}"
    url = f"{postgres_url}&application_name={name}"
    admin = sa.create_engine(postgres_url)

    def open_connections() -> int:
        query = "select count(*) from pg_stat_activity where application_name = :name"
        with admin.connect() as conn:
            return int(conn.execute(sa.text(query), {"name": name}).scalar_one())

    kept = KeptEngines()
    try:
        store = Store(url, kept=kept)
        with store.engine.connect() as one, store.engine.connect() as two:
            one.execute(sa.text("select 1"))
            two.execute(sa.text("select 1"))
        store.close()
        assert open_connections() >= 2  # kept for the next run
        kept.close()
        # the server ends a backend a moment after its client closes the connection, so
        # pg_stat_activity may still list it when asked at once (seen once in CI)
        eventually(
            "the kept engines' connections to end",
            lambda: True if open_connections() == 0 else None,
            timeout=10.0,
        )
    finally:
        kept.close()
        admin.dispose()


def test_the_profile_reads_are_compiled_once_per_engine(state_url: str) -> None:
    """Each statement enters the engine's cache of compiled statements, and a second run's
    finds it there; one SQLAlchemy cannot cache is compiled every time and never enters."""
    queries = (*GROUP_QUERIES, linked_away_query)
    ctx = ProfileContext(("shop",), ("shop", "out"), "TRY", 0, ProfileSettings())
    store = Store(state_url)
    compiled: dict[Any, Any] = {}
    try:
        with store.engine.connect().execution_options(compiled_cache=compiled) as conn:
            for _ in range(2):  # two runs
                for query in queries:
                    conn.execute(query(conn, ctx, EVERYONE)).all()
        assert len(compiled) == len(queries)
    finally:
        store.close()
