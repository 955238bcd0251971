"""Planning in worker processes: the same changes and report as one process, on both engines."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmsync.config import ProfileSettings
from crmsync.contract import Change, Outcome, PushResult
from crmsync.diff import Policy
from crmsync.fields import catalogue
from crmsync.profile_scope import ProfileContext
from crmsync.records import Cart, Customer, Stream
from crmsync.registry import default_mapping
from crmsync.sample import SampleSpec, iter_store
from crmsync.segments import DEFAULT_SEGMENTS, SegmentSet
from engine import parallel
from engine.parallel import ParallelError, PlanJob, run_workers, slices_for
from engine.planner import Planner, Tally, Target
from mappings import load_mapping
from state.ledger import RetryPolicy, record_results
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, customer, order
from tests.e2e import ledger_rows, make_site

FIELDS = catalogue()
CTX = ProfileContext(("shop",), ("shop", "out"), "TRY", to_ms(NOW) or 0, ProfileSettings())
POLICY = Policy(max_attempts=3, now_ms=to_ms(NOW) or 0)


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    store = Store(state_url)
    pending: dict[Stream, list[Any]] = {s: [] for s in Stream}
    for record in iter_store(SampleSpec(customers=250, seed=9, now=NOW)):
        kind = {Customer: Stream.CUSTOMERS, Cart: Stream.CARTS}.get(type(record), Stream.ORDERS)
        pending[kind].append(record)
    pending[Stream.CUSTOMERS] += [
        customer("lonely", None, phone="+905550000009"),
        customer("known", "known@example.com", phone="+905550000009"),
    ]
    pending[Stream.ORDERS].append(order("lonely-1", "lonely", "99", 2))
    for kind, records in pending.items():
        store.stage("shop", kind, records)
    yield store
    store.close()


def planner() -> Planner:
    mapping = load_mapping(default_mapping("outbox"), FIELDS)
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    return Planner(CTX, segments, [Target("out", mapping)], POLICY, NOW, samples=5)


def job(store: Store, plan: Planner, *, send: bool = True) -> PlanJob:
    return PlanJob(
        state_url=store.url,
        ctx=CTX,
        segment_rules=dict(plan.segments.rules),
        fields=dict(FIELDS),
        targets=plan.targets,
        policy=POLICY,
        as_of=NOW,
        samples=5,
        send_changes=send,
    )


def in_one_process(store: Store, plan: Planner) -> tuple[Tally, list[tuple[int, Change]]]:
    tally = plan.new_tally()
    with store.engine.connect() as conn:
        changes = list(plan.changes(conn, tally))
    return tally, changes


def in_workers(
    store: Store, plan: Planner, workers: int = 2, *, send: bool = True
) -> tuple[Tally, list[tuple[int, Change]]]:
    with store.engine.connect() as conn:
        slices = slices_for(conn, CTX.sources, workers)
    received: list[tuple[int, Change]] = []
    tally = run_workers(job(store, plan, send=send), slices, workers, *_append(received))
    return tally, received


def _append(into: list[tuple[int, Change]]) -> tuple[Any, Any]:
    """deliver and finished callbacks that keep the changes, checking each slice's are
    delivered before the slice is reported finished, and never after."""
    done: set[int] = set()

    def deliver(part: int, index: int, change: Change) -> None:
        assert part not in done, f"a change of slice {part} after it finished"
        into.append((index, change))

    return deliver, done.add


def acknowledge_some(store: Store, changes: list[tuple[int, Change]]) -> None:
    """Acks two thirds of the changes and fails every seventh, as a destination might."""
    known = "e:known@example.com"  # acked, so that a later order makes it an update
    ok = [c for i, (_, c) in enumerate(changes) if i % 3 or c.person_key == known]
    failed = [c for i, (_, c) in enumerate(changes) if not i % 7 and c not in ok]
    results = [PushResult(c.person_key, Outcome.OK) for c in ok]
    results += [PushResult(c.person_key, Outcome.FAILED, message="boom") for c in failed]
    with store.transaction() as conn:
        record_results(
            conn,
            "out",
            1,
            ok + failed,
            results,
            now_ms=POLICY.now_ms - 1,
            retry=RetryPolicy(3, 60_000),
        )


def test_workers_plan_exactly_the_changes_and_report_of_one_process(store: Store) -> None:
    plan = planner()
    first, changes = in_one_process(store, plan)
    acknowledge_some(store, changes)
    store.stage("shop", Stream.ORDERS, [order("late", "lonely", "500", 1)])  # an update

    expected_tally, expected = in_one_process(store, plan)
    tally, received = in_workers(store, plan, workers=2)

    assert first.profiles > 250 and len(changes) == first.counts["out"]["create"]
    counts = expected_tally.counts["out"]
    assert counts["unchanged"] > 0 and counts["update"] > 0 and counts["create"] > 0
    assert sorted(received, key=lambda item: item[1].person_key) == expected
    assert tally == expected_tally  # counts, segments, profiles and the first samples


def test_a_dry_run_in_workers_sends_no_changes_but_the_same_report(store: Store) -> None:
    plan = planner()
    expected_tally, expected = in_one_process(store, plan)
    tally, received = in_workers(store, plan, workers=2, send=False)
    assert received == [] and expected
    assert tally == expected_tally


def test_workers_map_with_what_the_run_loaded_even_if_the_file_changes(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.toml"
    path.write_text(default_mapping("outbox").read_text("utf-8"), encoding="utf-8")
    mapping = load_mapping(path, FIELDS)
    path.write_text(  # edited under the run: a worker must not see this
        path.read_text("utf-8").replace('prefix = "crm-"', 'prefix = "edited-"'),
        encoding="utf-8",
    )
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    plan = Planner(CTX, segments, [Target("out", mapping)], POLICY, NOW, samples=5)
    expected_tally, expected = in_one_process(store, plan)
    tally, received = in_workers(store, plan, workers=2)
    assert sorted(received, key=lambda item: item[1].person_key) == expected
    assert tally == expected_tally
    assert all(tag.startswith("crm-") for _, c in received for tag in c.memberships_add)
    assert any(c.memberships_add for _, c in received)


def slices_for_all(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return slices_for(conn, CTX.sources, 2)


def test_an_error_in_a_worker_stops_the_run_with_that_error(store: Store, tmp_path: Path) -> None:
    plan = planner()
    empty = Store(f"sqlite:///{tmp_path / 'empty.db'}", migrate=False)  # no tables at all
    wrong = dataclasses.replace(job(store, plan), state_url=empty.url)
    with pytest.raises(sa.exc.OperationalError, match="no such table") as raised:
        run_workers(wrong, slices_for_all(store), 2, *_append([]))
    assert any("in profile worker" in note for note in raised.value.__notes__)
    empty.close()


def test_a_worker_that_dies_fails_the_run(store: Store) -> None:
    def kill_the_workers(part: int, index: int, change: Change) -> None:
        for pid in workers():
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(ParallelError, match="died"):
        slices = slices_for_all(store)
        run_workers(job(store, planner()), slices, 2, kill_the_workers, lambda part: None)
    assert workers() == []  # none left behind


def workers() -> list[int]:
    """Live worker processes of this test process (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in task.read_text().split():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            except OSError:
                continue
            if b"worker_main" in command and state != "Z":
                found.append(int(pid))
    return found


def test_small_stores_and_one_core_plan_in_one_process_unless_configured(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.engine.connect() as conn:
        monkeypatch.setattr(parallel, "default_workers", lambda: 2)  # two cores
        assert parallel.worker_count(conn, CTX.sources, None) == 1  # 252 customers
        monkeypatch.setattr(parallel, "PEOPLE_PER_WORKER", 100)
        assert parallel.worker_count(conn, CTX.sources, None) == 2
        monkeypatch.setattr(parallel, "default_workers", lambda: 1)  # one core
        assert parallel.worker_count(conn, CTX.sources, None) == 1
        assert parallel.worker_count(conn, CTX.sources, 3) == 3  # configured: as set
        assert parallel.worker_count(conn, CTX.sources, 1) == 1
    assert not parallel.shared_database("sqlite:///:memory:")
    assert parallel.shared_database("postgresql://u@localhost/db")


def test_a_pipeline_run_with_workers_ends_like_a_run_in_one_process(
    tmp_path: Path, state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_url = f"sqlite:///{tmp_path / 'one.db'}"
    one = make_site(tmp_path / "one", one_url, customers=400, batch_size=50)
    report_one = one.run_json()

    calls: list[int] = []

    def counting(*args: Any) -> Tally:
        calls.append(args[2])
        return run_workers(*args)

    monkeypatch.setattr("engine.plan_run.run_workers", counting)
    many = make_site(tmp_path / "many", state_url, customers=400, batch_size=50, workers=2)
    report_many = many.run_json()

    assert calls == [2]
    assert report_many["destinations"] == report_one["destinations"]
    assert report_many["segments"] == report_one["segments"]
    assert report_many["profiles"] == report_one["profiles"] > 400
    assert many.record_hashes() == one.record_hashes()
    assert ledger_rows(state_url) == ledger_rows(one_url)
    assert report_many["samples"] == report_one["samples"]
    assert many.run_json()["destinations"]["out"].get("create", 0) == 0  # nothing left to do
