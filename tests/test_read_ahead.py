"""Reading ahead: a large read runs in a child process beside the staging, and stages
exactly what a read in the run's process stages; its errors and its death are the run's.

The child never opens the state database, so the comparisons run on SQLite.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
import sqlalchemy as sa

from crmsync import spool
from crmsync.child import Child, ChildError
from crmsync.contract import Check, ConnectorConfig, ConnectorContext, Span
from crmsync.errors import ConnectorError
from crmsync.progress import NoProgress
from crmsync.records import Record, RecordIssue, Stream
from crmsync.stopwatch import Stopwatch
from distributed.tasks import pull_one
from engine import read_ahead
from engine.pipeline import context_for
from engine.pull import PullStats, pull_source
from engine.read_ahead import Read, SourceRecipe, worth_reading_ahead
from engine.resolve import load_config
from state import schema
from state.store import Store
from tests.builders import customer
from tests.e2e import STORE_NOW, Site, edit_order, make_site

UNTIL = STORE_NOW - timedelta(days=3)  # some records changed later: left for the next run
NOT_CONTENT = {"staged_at", "first_seen", "last_seen"}  # when, not what
READERS = 2  # reader processes a read ahead is shared among, in these tests


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[read_ahead.child.Child]:
    """Every reader process started; any read is large enough to go ahead."""
    started: list[read_ahead.child.Child] = []
    start = read_ahead.child.start

    def recording(name: str, main: str) -> read_ahead.child.Child:
        started.append(start(name, main))
        return started[-1]

    monkeypatch.setattr(read_ahead.child, "start", recording)
    monkeypatch.setattr(read_ahead, "AHEAD_BYTES", 1)
    monkeypatch.setattr(read_ahead, "reader_count", lambda: READERS)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the spools go
    return started


def recipe_of(site: Site) -> SourceRecipe:
    config = load_config(site.config)
    spec = config.sources["shop"]
    return SourceRecipe(spec.cls, spec.config, context_for(config, spec.name))


def pull(
    store: Store,
    recipe: SourceRecipe,
    *,
    ahead: bool,
    until: datetime = UNTIL,
    progress: Any = None,
    full: bool = False,
) -> PullStats:
    source = recipe.build()
    try:
        return pull_source(
            store, "shop", source, until=until, lookback=timedelta(minutes=10), batch_size=97,
            progress=progress, stopwatch=Stopwatch(), recipe=recipe if ahead else None,
            full=full,
        )  # fmt: skip
    finally:
        source.close()


def staged(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the staging tables, the cursors and the versions, without times."""
    tables = (
        schema.customers,
        schema.orders,
        schema.order_lines,
        schema.carts,
        schema.quarantine,
        schema.cursors,
        schema.source_versions,
    )
    found = {}
    with store.engine.connect() as conn:
        for table in tables:
            # a cursor's or version's updated_at is when it was kept; a record's is content
            kept = {"updated_at"} if table in (schema.cursors, schema.source_versions) else set()
            columns = [c for c in table.columns if c.name not in NOT_CONTENT | kept]
            rows = conn.execute(sa.select(*columns).order_by(*columns)).all()
            found[table.name] = [tuple(row) for row in rows]
    return found


def counts(stats: PullStats) -> dict[str, dict[str, int]]:
    return {stream: s.as_dict() for stream, s in stats.streams.items()}


def open_store(path: Path) -> Store:
    return Store(f"sqlite:///{path}")


def test_a_read_ahead_stages_what_a_read_in_process_stages(
    tmp_path: Path, children: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", "sqlite://", customers=500, dirty_rate=0.1)
    recipe = recipe_of(site)
    cut: list[dict[Read, list[Read]]] = []
    divide = read_ahead.divided

    def recording(*args: Any) -> Any:
        found = divide(*args)
        cut.append(found[2])
        return found

    monkeypatch.setattr(read_ahead, "divided", recording)
    here, there = open_store(tmp_path / "here.db"), open_store(tmp_path / "there.db")
    try:
        in_process = pull(here, recipe, ahead=False)
        assert children == []
        ahead = pull(there, recipe, ahead=True)
        assert len(children) == READERS  # the three streams shared between two readers
        # the orders export, most of the bytes, was read in one part per reader
        [parts] = cut
        assert [(read.stream, len(p)) for read, p in parts.items()] == [(Stream.ORDERS, READERS)]
        assert counts(ahead) == counts(in_process)
        assert all(s["later"] > 0 for s in counts(ahead).values())  # the window is exercised
        assert sum(s["quarantined"] for s in counts(ahead).values()) > 0
        assert staged(there) == staged(here)
        assert staged(there)["cursors"]  # the last batch moved each cursor
    finally:
        here.close()
        there.close()


def test_a_whole_read_in_parts_forgets_the_issues_it_no_longer_finds(
    tmp_path: Path, children: list[Any]
) -> None:
    """The orders export read again whole, in a part per reader: the last part's batch
    tells that the read went through the whole export, so the malformed line deleted
    since is forgotten, as one clean read would never have seen it."""
    site = make_site(tmp_path / "site", "sqlite://", customers=500, dirty_rate=0.1)
    recipe = recipe_of(site)
    orders = site.data / "orders.jsonl"
    lines = orders.read_bytes().splitlines(keepends=True)
    broken = b'{"id": "99999999", "customer_id": \n'
    half = len(lines) // 2
    orders.write_bytes(b"".join([*lines[:half], broken, *lines[half:]]))
    store, fresh = open_store(tmp_path / "state.db"), open_store(tmp_path / "fresh.db")
    try:
        pull(store, recipe, ahead=True)
        before = issues(store)
        gone = {issue for issue in before if "99999999" in issue[-1]}
        assert len(gone) == 1 and len(before) > 1  # the line, and the generator's dirty rows
        orders.write_bytes(b"".join(lines))
        again = pull(store, recipe, ahead=True, full=True)
        assert len(children) == 2 * READERS
        assert again.streams["orders"].forgotten == 1
        pull(fresh, recipe, ahead=False)
        assert issues(store) == issues(fresh) == before - gone
    finally:
        store.close()
        fresh.close()


def issues(store: Store) -> set[tuple[Any, ...]]:
    """The issues kept, without how often and when they were seen."""
    q = schema.quarantine
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(q.c.stream, q.c.record_key, q.c.field, q.c.excerpt))
        return {tuple(row) for row in rows}


def test_a_workers_pull_of_one_stream_reads_ahead_as_a_run_does(
    tmp_path: Path, children: list[Any]
) -> None:
    """A Celery pull task reads its one stream (``distributed.tasks.pull_one``) ahead in
    reader processes, as a run in one process does, and stages what a read in the
    task's process stages."""
    site = make_site(tmp_path / "site", "sqlite://", customers=500, dirty_rate=0.1)
    recipe = recipe_of(site)
    config = load_config(site.config)
    spec = next(iter(config.pipelines.values()))
    here, there = open_store(tmp_path / "here.db"), open_store(tmp_path / "there.db")
    try:
        pull(here, recipe, ahead=False)
        for stream in (Stream.CUSTOMERS, Stream.ORDERS, Stream.CARTS):
            pull_one(config, spec, there, "shop", stream, UNTIL, full=False)
        # the customers (CSV) on one reader; the orders and the carts, each read alone and
        # each larger than one reader's share, in two parts on both readers
        assert len(children) == 1 + 2 * READERS
        assert staged(there) == staged(here)
    finally:
        here.close()
        there.close()


def test_an_incremental_read_stays_in_the_runs_process(tmp_path: Path, children: list[Any]) -> None:
    site = make_site(tmp_path / "site", "sqlite://", customers=100)
    recipe = recipe_of(site)
    store = open_store(tmp_path / "state.db")
    try:
        pull(store, recipe, ahead=True)
        assert len(children) == READERS
        edit_order(site.data / "orders.jsonl", "10000001", status="refunded")
        pull(store, recipe, ahead=True, until=STORE_NOW)  # every stream from its cursor
        assert len(children) == READERS
    finally:
        store.close()


def test_only_a_large_read_from_scratch_goes_ahead(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", "sqlite://", customers=100)
    source = recipe_of(site).build()
    fresh = [Read(Stream.CUSTOMERS, None), Read(Stream.ORDERS, None)]
    assert not worth_reading_ahead(source, fresh, full=False)  # far below 16 MB
    size = sum((site.data / name).stat().st_size for name in ("customers.csv", "orders.jsonl"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(read_ahead, "AHEAD_BYTES", size)
        assert worth_reading_ahead(source, fresh, full=False)
        since = [Read(Stream.CUSTOMERS, UNTIL), Read(Stream.ORDERS, UNTIL)]
        assert not worth_reading_ahead(source, since, full=False)
        assert worth_reading_ahead(source, since, full=True)
        assert not worth_reading_ahead(Failing(), fresh, full=True)  # its size is unknown


class Failing:
    """A source whose customers stream fails part-way (built again in the child)."""

    kind: ClassVar[str] = "failing"
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: Any = None, context: ConnectorContext | None = None) -> None:
        pass

    def streams(self) -> Sequence[Stream]:
        return [Stream.CUSTOMERS]

    def check(self) -> list[Check]:
        return []

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        for number in range(300):
            yield customer(str(number), f"k{number}@example.com")
        raise ConnectorError("the export went away part-way")

    def close(self) -> None:
        pass


class SizedFailing(Failing):
    def size(self, stream: Stream) -> int:
        return 2**40

    def position(self, stream: Stream) -> int | None:
        return None


def test_an_error_in_the_reader_is_raised_in_the_run_as_it_was(
    tmp_path: Path, children: list[Any]
) -> None:
    store = open_store(tmp_path / "state.db")
    try:
        recipe = SourceRecipe(SizedFailing, None, ConnectorContext("broken", tmp_path))
        with pytest.raises(ConnectorError, match="went away part-way") as raised:
            pull(store, recipe, ahead=True)
        assert any("reader process" in note for note in raised.value.__notes__)
        assert len(children) == 1 and children[0].process.poll() is not None  # reaped
        assert staged(store)["cursors"] == []  # nothing read is taken as done
        assert len(staged(store)["customers"]) > 0  # the batches before it are staged
    finally:
        store.close()


def test_a_reader_killed_part_way_loses_nothing_once_run_again(
    tmp_path: Path, children: list[Any]
) -> None:
    """The readers die after the first batch was staged; the export changes before the
    next run, which must stage what one clean read of the final export stages."""
    site = make_site(tmp_path / "site", "sqlite://", customers=2000)  # batches of 97
    recipe = recipe_of(site)
    store = open_store(tmp_path / "state.db")
    clean = open_store(tmp_path / "clean.db")

    class KillTheReaders(NoProgress):  # after the first batch staged
        def advance(self, stage: str, n: int) -> None:
            for reader in children:
                if reader.process.poll() is None:
                    os.kill(reader.process.pid, signal.SIGKILL)

    try:
        with pytest.raises(ChildError, match="died"):
            pull(store, recipe, ahead=True, progress=KillTheReaders())
        # what the readers spooled before they died may be staged, not all the orders
        assert "orders" not in {stream for _, stream, _ in staged(store)["cursors"]}
        assert len(staged(store)["customers"]) > 0
        edit_order(site.data / "orders.jsonl", "10000001", status="refunded")
        edit_order(site.data / "orders.jsonl", "10000400", status="cancelled")
        pull(store, recipe, ahead=True)
        pull(clean, recipe, ahead=False)
        assert staged(store) == staged(clean)
    finally:
        store.close()
        clean.close()
    assert not list(tmp_path.glob("crmsync-read-*"))  # the spools are removed


def test_reads_are_shared_by_size_and_each_reader_keeps_their_order() -> None:
    customers, orders, carts = (Read(s, None) for s in Stream)
    shared = read_ahead.lanes([customers, orders, carts], [21, 240, 34], 2)
    assert shared == [[orders], [customers, carts]]
    assert read_ahead.lanes([customers, orders, carts], [1, 1, 1], 1) == [
        [customers, orders, carts]
    ]
    assert read_ahead.lanes([customers], [5], 4) == [[customers]]  # no idle readers


def test_a_spool_deletes_each_segment_once_read_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 1)
    writer, reader = spool.SpoolWriter(tmp_path, "w"), spool.SpoolReader(tmp_path)
    notes = [writer.put(("batch", "x" * 60, n)) for n in range(5)]  # each fills a segment
    writer.close()
    assert len({note[1] for note in notes}) == 5
    assert reader.take(notes[0]) == ("batch", "x" * 60, 0)
    assert reader.take(notes[1]) == ("batch", "x" * 60, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-2", "w-3", "w-4", "w-5"]
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-3", "w-4", "w-5"]


def test_a_spool_writer_waits_for_the_reader_once_it_is_far_enough_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "SEGMENT_BYTES", 1)  # a segment a message
    monkeypatch.setattr(spool, "SEGMENTS_AHEAD", 2)
    monkeypatch.setattr(spool, "WAIT", 0.01)
    notes: queue.Queue[spool.Note] = queue.Queue()
    waited = threading.Event()
    writer = spool.SpoolWriter(tmp_path, "w", waited.set)

    def write() -> None:
        for n in range(5):
            notes.put(writer.put(("batch", n)))
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    assert waited.wait(5)  # two segments written and unread: it waits for the reader
    assert notes.qsize() == 2 and len(list(tmp_path.iterdir())) == 2
    reader = spool.SpoolReader(tmp_path)
    taken = [reader.take(notes.get(timeout=5)) for _ in range(5)]
    thread.join(5)
    reader.close()
    assert taken == [("batch", n) for n in range(5)]
    assert list(tmp_path.iterdir()) == []


def _lane(reads: list[Read], tmp_path: Path) -> tuple[read_ahead.Lane, Any]:
    """A reader lane fed by hand: the returned end of its pipe sends its messages."""
    results, sent = multiprocessing.Pipe(duplex=False)
    tasks, _ = multiprocessing.Pipe(duplex=False)
    reader = Child("reader", cast(Any, None), tasks, results)
    return read_ahead.Lane(reader, reads, spool.SpoolReader(tmp_path)), sent


def _batch(tag: int, position: int | None = None) -> tuple[Any, ...]:
    """A batch named by ``tag`` (in its ``later`` count), ending at ``position``."""
    return read_ahead._packed(read_ahead.Batch(later=tag, position=position))


def test_the_run_takes_batches_from_whichever_reader_has_one(tmp_path: Path) -> None:
    """The orders are cut in two parts, one per reader; the second reader also has the
    carts. What it built is taken while the first reader has sent nothing yet, and the
    orders' last batch (the last part's) comes after every other part's batches."""
    orders, carts = Read(Stream.ORDERS, None), Read(Stream.CARTS, None)
    first, second = (
        Read(Stream.ORDERS, None, span=Span(0, 10)),
        Read(Stream.ORDERS, None, span=Span(10, None)),
    )
    lane_a, to_a = _lane([first], tmp_path)
    lane_b, to_b = _lane([second, carts], tmp_path)
    ahead = read_ahead.Ahead([lane_a, lane_b], {orders: [first, second]})
    for message in (_batch(21), _batch(22), ("end", 0.0), _batch(31), ("end", 0.0)):
        to_b.send(message)
    # the first reader sends only later: taking the readers in turn would wait for it
    later = threading.Timer(0.3, lambda: [to_a.send(m) for m in (_batch(11), ("end", 0.0))])
    later.start()
    taken = list(ahead.arriving([orders, carts]))
    later.join()
    assert [(read.stream, batch.later, last) for read, batch, last in taken] == [
        (Stream.ORDERS, 21, False),  # the last part's batches, all but its final one
        (Stream.CARTS, 31, True),
        (Stream.ORDERS, 11, False),
        (Stream.ORDERS, 22, True),  # where the orders' read ended, once both parts did
    ]


def test_a_divided_reads_batches_tell_how_much_of_its_input_its_parts_have_read(
    tmp_path: Path,
) -> None:
    """A divided read's parts send their batches mixed. Each batch the run takes tells
    the bytes all parts have read so far (each from its own start), not where in the
    input its own part got, so the stream's estimated total does not jump back and
    forth with the order in which the parts' batches come."""
    orders = Read(Stream.ORDERS, None)
    first, second = (
        Read(Stream.ORDERS, None, span=Span(0, 100)),
        Read(Stream.ORDERS, None, span=Span(100, None)),  # to the input's end, at 250
    )
    lane_a, to_a = _lane([first], tmp_path)
    lane_b, to_b = _lane([second], tmp_path)
    ahead = read_ahead.Ahead([lane_a, lane_b], {orders: [first, second]})
    for message in (_batch(1, 150), _batch(2, 250), ("end", 0.0)):
        to_b.send(message)
    # the first part's batches come after the second's, as its reader was slower
    sent = (_batch(3, 60), _batch(4, 100), ("end", 0.0))
    later = threading.Timer(0.3, lambda: [to_a.send(m) for m in sent])
    later.start()
    taken = list(ahead.arriving([orders]))
    later.join()
    assert [(batch.later, batch.position, last) for _, batch, last in taken] == [
        (1, 150, False),  # the second part has read 150 of its bytes, the first none yet
        (3, 210, False),  # 60 + 150
        (4, 250, False),  # 100 + 150: everything
        (2, 250, True),
    ]


def test_a_read_ahead_stages_the_customers_first_and_each_streams_cursor_last(
    tmp_path: Path, children: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site", "sqlite://", customers=500)
    calls: list[tuple[Stream, bool]] = []
    real = Store.stage_built

    def recorded(self: Store, source: str, stream: Stream, *args: Any, **kwargs: Any) -> Any:
        calls.append((stream, kwargs.get("cursor") is not None))
        return real(self, source, stream, *args, **kwargs)

    monkeypatch.setattr(Store, "stage_built", recorded)
    store = open_store(tmp_path / "state.db")
    try:
        pull(store, recipe_of(site), ahead=True)
    finally:
        store.close()
    streams = [stream for stream, _ in calls]
    customers = streams.count(Stream.CUSTOMERS)
    assert customers > 1 and streams[:customers] == [Stream.CUSTOMERS] * customers
    for stream in Stream:
        moved = [cursor for s, cursor in calls if s is stream]
        assert moved[-1] and not any(moved[:-1]), stream  # only its last batch moves it
