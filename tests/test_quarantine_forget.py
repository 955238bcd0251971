"""A full read forgets the issues of records that are fixed or gone: after it, the store
keeps exactly the issues one clean run over the final data keeps.

A malformed line is kept under a digest of its text, and a record without an id under
its excerpt's: neither is ever seen again to be fixed, so before, they stayed listed by
``status`` for good once the export was corrected, and so did a bad record deleted from
the export. A read that goes over the whole stream (``since`` None, not resumed from a
point) reports every bad record still there again; what it did not report is gone.
A read of a window, or one resumed after the start it proved unchanged, reports only
part of them, and forgets nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

import state.store
from connectors.files import FilesSource
from crmsync.contract import ConnectorContext
from crmsync.records import IssueAction, RecordIssue, Stream
from engine.pull import PullStats, pull_source
from engine.report import pulled_sum
from state import schema
from state.store import Store
from state.timeutil import now_ms
from tests.test_pull_versions import FakeSource
from tests.test_pull_versions import pull as pull_fake

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)
# the bundled sample's columns: the files source's default mapping reads them
SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "customers.csv"
HEADER = SAMPLE.read_text(encoding="utf-8").splitlines()[0].split(",")
OLD, LATEST, NEW = (
    "2026-01-01T00:00:00+03:00",
    "2026-01-15T00:00:00+03:00",
    "2026-02-01T00:00:00+03:00",
)


def customer(key: str, email: str, *, created: str = "2025-01-01", updated: str = OLD) -> list[str]:
    consent = ["subscribed", "", "not_subscribed", "", "false"]
    return [key, email, "Ada", "Kaya", "", "İzmir", "", "TR", "", created, updated, *consent]


GOOD = customer("1", "a@example.com", updated=LATEST)  # the cursor, after the bad ones
MALFORMED = [*customer("2", "b@example.com"), "a field too many"]
NO_ID = customer("", "c@example.com")
BAD_EMAIL = customer("4", "not-an-email")
BAD_DATE = customer("6", "f@example.com", created="2026-13-01")
FIRST = [GOOD, MALFORMED, NO_ID, BAD_EMAIL, BAD_DATE]
# the export rewritten: the malformed row fixed, the row without an id and the row with a
# bad date deleted, the bad e-mail left as it was (now on another line), a new bad line
FINAL = [
    GOOD,
    customer("2", "b@example.com", updated=NEW),
    BAD_EMAIL,
    [*customer("7", "g@example.com", updated=NEW), "x", "y"],
]


def write_customers(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def pull(store: Store, stream: str, path: Path, *, window: bool, full: bool = False) -> PullStats:
    config: dict[str, Any] = {"path": str(path)}
    if window:
        config["updated_at"] = "updated_at"
    context = ConnectorContext(name="shop", config_dir=path.parent)
    source = FilesSource({"kind": "files", stream: config}, context)
    try:
        return pull_source(
            store, "shop", source, until=UNTIL, lookback=timedelta(minutes=10), full=full
        )
    finally:
        source.close()


def kept(store: Store) -> set[tuple[Any, ...]]:
    """The issues kept, without when they were seen (a clean run saw them once)."""
    q = schema.quarantine
    columns = (q.c.stream, q.c.record_key, q.c.field, q.c.action, q.c.external_id, q.c.reason)
    with store.engine.connect() as conn:
        return {tuple(row) for row in conn.execute(select(*columns))}


def clean(tmp_path: Path, stream: str, path: Path, *, window: bool) -> set[tuple[Any, ...]]:
    fresh = Store(f"sqlite:///{tmp_path / 'clean.db'}")
    try:
        pull(fresh, stream, path, window=window)
        return kept(fresh)
    finally:
        fresh.close()


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    opened = Store(state_url)
    yield opened
    opened.close()


def test_a_full_read_keeps_the_issues_a_clean_run_keeps(store: Store, tmp_path: Path) -> None:
    path = write_customers(tmp_path / "customers.csv", FIRST)
    pull(store, "customers", path, window=False)
    assert len(kept(store)) == 4
    write_customers(path, FINAL)
    stats = pull(store, "customers", path, window=False).streams["customers"]
    expected = clean(tmp_path, "customers", path, window=False)
    assert kept(store) == expected
    assert {key for _, key, *_ in expected} >= {"4"}  # still bad: still kept
    # the malformed line, the record without an id, the record deleted with its bad date
    assert stats.forgotten == 3
    told = pulled_sum(stats.as_dict())  # the run's report
    assert told.endswith("; 3 issue(s) kept before no longer found: forgotten")


def test_a_windowed_read_forgets_nothing_and_a_full_run_then_does(
    store: Store, tmp_path: Path
) -> None:
    """An incremental read of a window does not report a bad record it did not change
    (``4``, updated before the window): it must stay kept."""
    path = write_customers(tmp_path / "customers.csv", FIRST)
    pull(store, "customers", path, window=True)
    before = kept(store)
    write_customers(path, FINAL)
    stats = pull(store, "customers", path, window=True).streams["customers"]
    # the rows in the window: 1 (at the cursor, within the lookback), 2 and the line of 7
    assert (stats.received, stats.forgotten) == (3, 0)
    assert kept(store) > before - {i for i in before if i[1] == "2"}  # 2 fixed, none lost
    full = pull(store, "customers", path, window=True, full=True).streams["customers"]
    assert full.forgotten == 3
    assert kept(store) == clean(tmp_path, "customers", path, window=True)


def order_line(key: str, **changes: Any) -> bytes:
    order = {
        "id": key,
        "customer_id": "1",
        "email": "a@example.com",
        "created_at": "2026-01-01T10:00:00+03:00",
        "status": "fulfilled",
        "currency": "TRY",
        "total_price": "100.00",
        "line_items": [{"sku": "S-1", "title": "Cüzdan", "quantity": 1, "price": "100.00"}],
        **changes,
    }
    return orjson.dumps(order) + b"\n"


def test_a_resumed_read_keeps_the_start_it_skipped_and_a_whole_one_forgets(
    store: Store, tmp_path: Path
) -> None:
    """A JSON-lines export appended to is read from where its last read ended: the
    malformed line before that point is not read again, and still there, so it stays.
    Rewritten without it, the export is read whole although a point was given, and the
    line's issue goes."""
    path = tmp_path / "orders.jsonl"
    malformed = b'{"id": "90", "customer_id": "1", \n'
    path.write_bytes(order_line("10") + malformed + order_line("11", currency="??"))
    pull(store, "orders", path, window=False)
    assert len(kept(store)) == 2
    with path.open("ab") as handle:
        handle.write(order_line("12"))
    appended = pull(store, "orders", path, window=False).streams["orders"]
    assert appended.received == 1  # resumed: the start was not read again
    assert appended.forgotten == 0
    assert kept(store) == clean(tmp_path, "orders", path, window=False)
    (tmp_path / "clean.db").unlink()
    path.write_bytes(order_line("10") + order_line("11", currency="??") + order_line("12"))
    rewritten = pull(store, "orders", path, window=False).streams["orders"]
    assert rewritten.received == 3  # a point was given, and did not hold: read whole
    assert rewritten.forgotten == 1
    assert kept(store) == clean(tmp_path, "orders", path, window=False)
    assert len(kept(store)) == 1


def test_a_source_that_cannot_tell_reads_whole_with_no_since_and_a_failed_read_forgets_nothing(
    store: Store,
) -> None:
    """A source that is not ``Exhaustive`` (REST, SQL) read whole when asked for
    everything: ``since`` None (a first read, ``backfill --full``), no resume point."""
    source = FakeSource()
    broken = RecordIssue(Stream.CUSTOMERS, None, IssueAction.QUARANTINED, "broken", "", "{bro")
    source.items[Stream.CUSTOMERS].append(broken)
    pull_fake(store, source)
    assert len(kept(store)) == 1
    source.items[Stream.CUSTOMERS].remove(broken)
    source.versions[Stream.CUSTOMERS] = "c2"
    incremental = pull_fake(store, source).streams["customers"]
    assert store.cursor("shop", "customers") is not None  # the read above had a since
    assert (incremental.received, incremental.forgotten) == (5, 0)
    assert len(kept(store)) == 1
    source.fail_after = 3
    with pytest.raises(RuntimeError, match="part-way"):
        pull_fake(store, source, full=True)
    assert len(kept(store)) == 1  # a read cut short did not go through the whole stream
    source.fail_after = None
    assert pull_fake(store, source, full=True).streams["customers"].forgotten == 1
    assert kept(store) == set()


def test_a_clock_stepped_back_during_the_read_forgets_nothing_still_there(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch of a read stamps its issues with the read's start: the wall clock set
    back while the read stages (a minute, by NTP, say) cannot make an issue it just
    reported look older than the read, and so gone."""
    path = write_customers(tmp_path / "customers.csv", FIRST)
    pull(store, "customers", path, window=False)
    write_customers(path, [*FIRST, customer("8", "h@example.com", updated=NEW)])
    began = now_ms()
    monkeypatch.setattr(state.store, "now_ms", lambda: began - 60_000)
    stats = pull(store, "customers", path, window=False).streams["customers"]
    assert stats.forgotten == 0
    assert len(kept(store)) == 4
