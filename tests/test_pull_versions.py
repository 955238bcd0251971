"""The pull side of ``Versioned`` sources: a stream whose version has not changed since its
last complete read is not read again, and nothing else ever skips a read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest

import state.store
from crmsync.contract import Check, ConnectorConfig, ConnectorContext, Versioned
from crmsync.records import Record, RecordIssue, Stream
from engine.pull import PullStats, pull_source
from state.staging import StageStats
from state.store import Store
from tests.builders import NOW, customer, days_ago, order

UNTIL = NOW


class FakeSource:
    """Customers and orders from lists, with a version per stream the test sets; counts
    its reads. ``fail_after``: raise after yielding that many items of a read."""

    kind: ClassVar[str] = "fake"
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: Any = None, context: ConnectorContext | None = None) -> None:
        self.items: dict[Stream, list[Record | RecordIssue]] = {
            Stream.CUSTOMERS: [customer(str(i), f"k{i}@example.com") for i in range(5)],
            Stream.ORDERS: [order(f"o{i}", str(i), "100", 3) for i in range(5)],
        }
        self.versions: dict[Stream, str | None] = {Stream.CUSTOMERS: "c1", Stream.ORDERS: "o1"}
        self.reads: list[Stream] = []
        self.fail_after: int | None = None

    def streams(self) -> Sequence[Stream]:
        return [Stream.CUSTOMERS, Stream.ORDERS]

    def check(self) -> list[Check]:
        return []

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        self.reads.append(stream)
        for number, item in enumerate(self.items[stream]):
            if self.fail_after is not None and number >= self.fail_after:
                raise RuntimeError("the export went away part-way")
            yield item

    def version(self, stream: Stream) -> str | None:
        return self.versions[stream]

    def close(self) -> None:
        pass


class Unversioned(FakeSource):
    version = None  # type: ignore[assignment]  # not a Versioned source


def pull(store: Store, source: FakeSource, *, full: bool = False, batch: int = 2) -> PullStats:
    return pull_source(
        store, "shop", source, until=UNTIL, lookback=timedelta(minutes=10), full=full,
        batch_size=batch,
    )  # fmt: skip


def received(stats: PullStats) -> dict[str, int]:
    return {stream: s.received for stream, s in stats.streams.items()}


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    opened = Store(state_url)
    yield opened
    opened.close()


def test_the_fake_is_versioned_and_its_subclass_is_not() -> None:
    assert isinstance(FakeSource(), Versioned)
    assert not isinstance(Unversioned(), Versioned)


def test_an_unchanged_stream_is_not_read_and_a_changed_one_is(store: Store) -> None:
    source = FakeSource()
    assert received(pull(store, source)) == {"customers": 5, "orders": 5}
    assert store.source_version("shop", "customers") == "c1"
    source.reads.clear()

    stats = pull(store, source)
    assert source.reads == []
    assert all(s.not_read and s.received == 0 for s in stats.streams.values())
    assert all(s.as_dict()["not_read"] == 1 for s in stats.streams.values())  # reported

    source.versions[Stream.ORDERS] = "o2"
    source.items[Stream.ORDERS].append(order("o9", "1", "50", 1))
    stats = pull(store, source)
    assert source.reads == [Stream.ORDERS]
    assert (stats.streams["orders"].received, stats.streams["orders"].staged) == (6, 1)
    assert store.source_version("shop", "orders") == "o2"


def test_a_full_read_reads_every_stream_whatever_its_version(store: Store) -> None:
    source = FakeSource()
    pull(store, source)
    source.reads.clear()
    stats = pull(store, source, full=True)
    assert source.reads == [Stream.CUSTOMERS, Stream.ORDERS]
    assert received(stats) == {"customers": 5, "orders": 5}


def test_a_backfill_forgets_the_versions_of_its_sources(store: Store) -> None:
    source = FakeSource()
    pull(store, source)
    store.reset_cursors(["shop"], to=days_ago(30))  # backfill --since
    assert store.source_version("shop", "customers") is None
    source.reads.clear()
    pull(store, source)
    assert source.reads == [Stream.CUSTOMERS, Stream.ORDERS]
    store.reset_cursors(["shop"])  # backfill --full
    assert store.source_version("shop", "orders") is None


def test_a_read_that_leaves_records_for_later_keeps_no_version(store: Store) -> None:
    source = FakeSource()
    source.items[Stream.CUSTOMERS].append(
        customer("late", "late@example.com", updated_at=UNTIL + timedelta(minutes=1))
    )
    stats = pull(store, source)
    assert stats.streams["customers"].later == 1
    assert store.source_version("shop", "customers") is None
    assert store.source_version("shop", "orders") == "o1"
    source.reads.clear()
    pull(store, source)
    assert source.reads == [Stream.CUSTOMERS]  # the same version, read again for the late one


def test_a_read_that_leaves_records_for_later_forgets_the_version_kept_before(
    store: Store,
) -> None:
    source = FakeSource()
    pull(store, source)
    source.versions[Stream.CUSTOMERS] = "c2"
    source.items[Stream.CUSTOMERS].append(
        customer("late", "late@example.com", updated_at=UNTIL + timedelta(minutes=1))
    )
    pull(store, source)
    assert store.source_version("shop", "customers") is None


def test_a_read_that_fails_part_way_keeps_the_old_version(store: Store) -> None:
    source = FakeSource()
    pull(store, source)
    source.versions[Stream.CUSTOMERS] = "c2"
    source.fail_after = 3
    with pytest.raises(RuntimeError):
        pull(store, source)  # two records staged in a batch of their own, then the failure
    assert store.source_version("shop", "customers") == "c1"
    source.fail_after = None
    source.reads.clear()
    pull(store, source)
    assert source.reads == [Stream.CUSTOMERS]
    assert store.source_version("shop", "customers") == "c2"


def test_a_source_that_cannot_tell_is_read_every_time(store: Store) -> None:
    source = FakeSource()
    source.versions = {Stream.CUSTOMERS: None, Stream.ORDERS: None}
    for _ in range(2):
        source.reads.clear()
        pull(store, source)
        assert source.reads == [Stream.CUSTOMERS, Stream.ORDERS]
    assert store.source_version("shop", "customers") is None


def test_a_source_without_versions_is_read_every_time_and_keeps_none(store: Store) -> None:
    source = Unversioned()
    for _ in range(2):
        source.reads.clear()
        pull(store, source)
        assert source.reads == [Stream.CUSTOMERS, Stream.ORDERS]
    assert store.source_version("shop", "customers") is None


def test_the_version_is_kept_in_the_transaction_that_moves_the_cursor(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while keeping the version leaves neither it nor the cursor behind."""
    source = FakeSource()

    def broken(*args: Any) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(state.store, "_keep_version", broken)
    with pytest.raises(RuntimeError):
        pull(store, source, batch=100)
    assert store.cursor("shop", "customers") is None
    monkeypatch.undo()
    pull(store, source, batch=100)
    assert store.cursor("shop", "customers") == days_ago(10)  # the builders' updated_at
    assert store.source_version("shop", "customers") == "c1"


def test_the_summary_says_a_stream_was_not_read_rather_than_that_it_was_empty() -> None:
    from engine.report import pulled_sum

    skipped = StageStats(not_read=True).as_dict()
    assert pulled_sum(skipped) == "not read: unchanged since its last complete read"
    read_empty = StageStats().as_dict()
    assert "not_read" not in read_empty
    assert pulled_sum(read_empty).startswith("0 received = 0 new or changed")
