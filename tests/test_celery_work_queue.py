"""The workers' tables in PostgreSQL (``state.work_queue``): a task is done once however
often it is delivered, two deliveries never run at once, a slice planned again replaces
its rows, and migration 0011 creates exactly the tables the module describes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.contract import Action, Change, ConsentIntent
from state import work_queue
from state.store import Store
from state.work_queue import (
    SliceWriter,
    add_tasks,
    batch_changes,
    channel,
    claim,
    cut_batches,
    finish,
    forget_run,
    mark_stopped,
    stopped,
    tasks,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    yield store
    store.close()


def _run(store: Store) -> int:
    return store.start_run("main", "manual", datetime(2026, 11, 1, tzinfo=UTC))


def _change(key: str, name: str) -> Change:
    return Change(
        person_key=key,
        action=Action.UPSERT,
        is_new=True,
        email=key[2:],
        phone=None,
        fields={"first_name": name},
        memberships_add=("crm-vip",),
        memberships_remove=(),
        email_intent=ConsentIntent.SUBSCRIBE_IF_NEW,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash=f"hash-{name}",
        memberships=("crm-vip",),
    )


def test_migration_0011_creates_exactly_the_work_tables(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    for table in work_queue.metadata.tables.values():
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
        key = inspector.get_pk_constraint(table.name)["constrained_columns"]
        assert key == [c.name for c in table.primary_key.columns], table.name


def test_a_task_done_is_not_run_again_and_a_finished_run_runs_nothing(store: Store) -> None:
    run = _run(store)
    with store.transaction() as conn:
        add_tasks(conn, run, ["plan/0", "plan/1"])
    with claim(store.engine, run, "plan/0") as go:
        assert go
        with store.transaction() as conn:
            finish(conn, run, "plan/0", {"changes": {"out": 3}})
    with claim(store.engine, run, "plan/0") as go:
        assert not go  # delivered again: done already
    store.finish_run(run, "failed", {})
    with claim(store.engine, run, "plan/1") as go:
        assert not go  # its run ended: late messages do nothing
    with store.engine.connect() as conn:
        found = tasks(conn, run, "plan/")
    assert found["plan/0"].state == "done" and found["plan/0"].attempts == 1
    assert found["plan/0"].result == {"changes": {"out": 3}}
    assert found["plan/1"].state == "queued" and found["plan/1"].attempts == 0


def test_a_second_delivery_waits_for_the_first_then_does_nothing(store: Store) -> None:
    run = _run(store)
    with store.transaction() as conn:
        add_tasks(conn, run, ["push/out/0/0"])
    seen: list[tuple[str, bool]] = []
    first_in = threading.Event()

    def second() -> None:
        first_in.wait()
        with claim(store.engine, run, "push/out/0/0") as go:
            seen.append(("second", go))

    thread = threading.Thread(target=second)
    thread.start()
    with claim(store.engine, run, "push/out/0/0") as go:
        first_in.set()
        time.sleep(0.5)  # the second delivery is waiting for the lock meanwhile
        seen.append(("first", go))
        with store.transaction() as conn:
            finish(conn, run, "push/out/0/0", {"counts": {"ok": 2}})
    thread.join(10)
    assert seen == [("first", True), ("second", False)]


def test_a_slice_written_again_replaces_its_rows(store: Store) -> None:
    run = _run(store)
    with store.transaction() as conn:
        writer = SliceWriter(conn, run, 0, ["out", "mc"])
        for i in range(5):
            writer.change(i % 2, _change(f"e:p{i}@example.com", f"first{i}"))
            writer.person((f"e:p{i}@example.com", None, "vip", None))
        assert writer.close() == {"out": 3, "mc": 2}
    with store.transaction() as conn:  # delivered again after a crash: planned anew
        writer = SliceWriter(conn, run, 0, ["out", "mc"])
        for i in range(3):
            writer.change(0, _change(f"e:p{i}@example.com", f"again{i}"))
            writer.person((f"e:p{i}@example.com", None, "vip", None))
        assert writer.close() == {"out": 3, "mc": 0}
    with store.engine.connect() as conn:
        out = batch_changes(conn, run, "out", [(0, 0, 10)])
        assert batch_changes(conn, run, "mc", [(0, 0, 10)]) == []
        assert batch_changes(conn, run, "out", [(0, 1, 2)]) == [out[1]]
        assert batch_changes(conn, run, "out", [(0, 2, 3), (0, 0, 1)]) == [out[2], out[0]]
        people = conn.execute(sa.select(sa.func.count()).select_from(work_queue.planned_people))
        assert people.scalar() == 3
    assert out == [_change(f"e:p{i}@example.com", f"again{i}") for i in range(3)]


def test_a_stopped_destination_keeps_its_first_reason_and_a_run_ends_clean(
    store: Store,
) -> None:
    run = _run(store)
    with store.transaction() as conn:
        add_tasks(conn, run, ["push/mc/0/0"])
        assert stopped(conn, run, "mc") is None
        mark_stopped(conn, run, "mc", "Mailchimp refused the key", full=False)
        mark_stopped(conn, run, "mc", "no more today", full=True)
        assert stopped(conn, run, "mc") == ("Mailchimp refused the key", False)
        SliceWriter(conn, run, 0, ["mc"]).close()
    with store.transaction() as conn:
        forget_run(conn, run)
    with store.engine.connect() as conn:
        for table in work_queue.metadata.tables.values():
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


def test_push_batches_run_across_slices_and_only_the_last_is_part_filled() -> None:
    """Batches cut per slice would leave a part-filled vendor call in every slice."""
    assert cut_batches([3, 0, 4, 2], 4) == [
        [(0, 0, 3), (2, 0, 1)],
        [(2, 1, 4), (3, 0, 1)],
        [(3, 1, 2)],
    ]
    assert cut_batches([8], 4) == [[(0, 0, 4)], [(0, 4, 8)]]
    assert cut_batches([0, 0], 4) == []


def test_a_task_that_ends_notifies_its_runs_channel_when_it_commits(store: Store) -> None:
    """The coordinator listens on the run's channel (``distributed.dispatch``): a task's
    end wakes it as soon as its row can be read, and not before."""
    run = _run(store)
    with store.transaction() as conn:
        add_tasks(conn, run, ["plan/0"])
    raw = store.engine.raw_connection()
    listener: Any = raw.driver_connection
    raw.detach()
    try:
        listener.autocommit = True
        listener.execute(f'LISTEN "{channel(run)}"')
        # another test's run of the same id, in another schema of the same database, may
        # be heard on the same channel at the same time: only this run's task counts
        with store.transaction() as conn:
            finish(conn, run, "plan/0", {})
            early = [n.payload for n in listener.notifies(timeout=0.2)]
            assert "plan/0" not in early  # not yet committed
        heard = []
        for note in listener.notifies(timeout=10):
            heard.append(note)
            if note.payload == "plan/0":
                break
    finally:
        raw.close()
    assert (heard[-1].channel, heard[-1].payload) == (channel(run), "plan/0")
