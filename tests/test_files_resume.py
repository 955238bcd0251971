"""An export file that only grew since its last whole read is read from where that read
ended (``Resumable``), and only when its start is proved the same.

The property every test here comes back to: reading a grown file from the point its
earlier version's read reached yields exactly what a whole read of the grown file yields
after what a whole read of the earlier version yielded. Whatever cannot be proved (a
change before the point, a shorter file, another mapping) is read whole.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors import files_rows, files_start
from connectors.files import FilesSource
from connectors.files_rows import BLOCK
from crmsync.contract import ConnectorContext, Resumable
from crmsync.records import Record, RecordIssue, Stream
from engine.pull import PullStats, pull_source
from engine.read_ahead import Batch, Read, _packed, _unpacked, reader
from state import schema
from state.store import Store
from tests.e2e import STORE_NOW, make_site

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    """A generated store's orders export (JSON lines), about 100 orders."""
    site = make_site(tmp_path / "site", "sqlite://", customers=20)
    return site.data / "orders.jsonl"


@pytest.fixture(params=["large", "7 bytes"])
def prefix_block(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start read again in its own large blocks, or in blocks of 7 bytes, which end
    inside lines and leave a short last one: the answers are the same."""
    if request.param == "7 bytes":
        monkeypatch.setattr(files_rows, "PREFIX_BLOCK", 7)


def source(path: Path, **overrides: Any) -> FilesSource:
    config = {"kind": "files", "orders": {"path": str(path), **overrides}}
    return FilesSource(config, ConnectorContext(name="shop", config_dir=path.parent))


def read(src: FilesSource, point: str | None = None, since: datetime | None = None) -> list[Any]:
    src.resume_from(Stream.ORDERS, point)
    return list(src.read(Stream.ORDERS, since, UNTIL))


def whole_read(path: Path) -> tuple[list[Any], str]:
    src = source(path)
    found = read(src)
    point = src.resume_point(Stream.ORDERS)
    assert point is not None
    return found, point


def new_order(number: int, at: str = "2026-10-30T10:00:00+03:00") -> str:
    order = {
        "id": f"9{number:07d}", "customer_id": "100001", "email": "new@example.com",
        "created_at": at, "updated_at": at, "status": "paid", "currency": "TRY",
        "total_price": "100.00",
        "line_items": [{"sku": "X", "title": "X", "quantity": 1, "price": "100.00"}],
    }  # fmt: skip
    return json.dumps(order, ensure_ascii=False)


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def test_the_files_source_is_resumable() -> None:
    assert issubclass(FilesSource, Resumable)


def test_a_file_that_only_grew_is_read_from_where_its_last_read_ended(
    orders: Path, prefix_block: None
) -> None:
    before, point = whole_read(orders)
    append(orders, new_order(1), '{"id": "broken",', new_order(2))
    grown, _ = whole_read(orders)
    resumed = read(source(orders), point)
    assert before + resumed == grown
    assert [r.external_id for r in resumed if isinstance(r, Record)] == ["90000001", "90000002"]
    [issue] = [r for r in resumed if isinstance(r, RecordIssue)]
    lines = len(orders.read_text(encoding="utf-8").splitlines())
    assert issue.reason.startswith(f"line {lines - 1}: malformed JSON")  # numbered as whole


def test_the_point_after_a_resumed_read_is_the_point_of_a_whole_read(orders: Path) -> None:
    _, point = whole_read(orders)
    append(orders, *(new_order(i) for i in range(3 * BLOCK // 200)))  # across blocks
    src = source(orders)
    read(src, point)
    assert src.resume_point(Stream.ORDERS) == whole_read(orders)[1]


def test_a_file_that_did_not_change_yields_nothing_from_its_point(
    orders: Path, prefix_block: None
) -> None:
    _, point = whole_read(orders)
    assert read(source(orders), point) == []


@pytest.mark.parametrize("where", ["first line", "last line"])
def test_a_change_before_the_point_is_read_whole(
    orders: Path, where: str, prefix_block: None
) -> None:
    _, point = whole_read(orders)
    text = orders.read_text(encoding="utf-8").splitlines()
    index = 0 if where == "first line" else len(text) - 1
    text[index] = text[index].replace('"TRY"', '"EUR"')  # the same length
    orders.write_text("\n".join(text) + "\n", encoding="utf-8")
    append(orders, new_order(1))
    assert read(source(orders), point) == whole_read(orders)[0]


# -- the start proved in a thread of its own (``connectors.files_start``) ---------------


@pytest.fixture
def proofs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each proof of a start as it ends, by a proof or by the read itself: (the thread it
    ran in, whether it held)."""
    done: list[tuple[str, bool]] = []
    prove = files_rows.same_start

    def recording(*args: Any) -> bool:
        held = prove(*args)
        done.append((threading.current_thread().name, held))
        return held

    monkeypatch.setattr(files_start, "same_start", recording)
    monkeypatch.setattr(files_rows, "same_start", recording)
    return done


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every handle a proof opened."""
    handles: list[Any] = []
    open_binary = files_start.open_binary

    def recording(path: Path) -> Any:
        handles.append(open_binary(path))
        return handles[-1]

    monkeypatch.setattr(files_start, "open_binary", recording)
    return handles


def test_the_start_is_proved_in_a_thread_of_its_own_and_proved_once(
    orders: Path, proofs: list[tuple[str, bool]]
) -> None:
    before, point = whole_read(orders)
    append(orders, new_order(1))
    src = source(orders)
    src.resume_from(Stream.ORDERS, point)  # the pull gives it early: the proof starts
    resumed = read(src, point)  # given again just before the read: the same proof
    assert before + resumed == whole_read(orders)[0]
    assert [r.external_id for r in resumed] == ["90000001"]
    assert proofs == [("crmsync-start-proof", True)]


def test_a_start_found_changed_is_read_whole_without_hashing_it_again(
    orders: Path, proofs: list[tuple[str, bool]]
) -> None:
    _, point = whole_read(orders)
    text = orders.read_text(encoding="utf-8").splitlines()
    text[0] = text[0].replace('"TRY"', '"EUR"')
    orders.write_text("\n".join(text) + "\n", encoding="utf-8")
    assert read(source(orders), point) == whole_read(orders)[0]
    assert proofs == [("crmsync-start-proof", False)]


def test_the_read_goes_on_in_the_file_proved_when_another_replaced_it(
    orders: Path, tmp_path: Path, proofs: list[tuple[str, bool]]
) -> None:
    """An export renamed over the path after its start was proved, before the read: the
    read takes the rest of the file proved, never bytes of another file after a start
    proved of this one. The new file's version differs: the next run reads it."""
    _, point = whole_read(orders)
    append(orders, new_order(1))
    src = source(orders)
    src.resume_from(Stream.ORDERS, point)
    deadline = time.monotonic() + 30
    while not proofs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proofs == [("crmsync-start-proof", True)]
    other = tmp_path / "other.jsonl"
    other.write_text(new_order(7) + "\n", encoding="utf-8")
    os.replace(other, orders)
    resumed = read(src, point)
    assert [r.external_id for r in resumed] == ["90000001"]


def test_a_proof_that_could_not_open_the_file_leaves_the_proving_to_the_read(
    orders: Path, monkeypatch: pytest.MonkeyPatch, proofs: list[tuple[str, bool]]
) -> None:
    """The export missing for a moment when the point came (being replaced, say): the
    read opens it again and proves its start itself."""
    _, point = whole_read(orders)
    append(orders, new_order(1))

    def missing(path: Path) -> Any:
        raise FileNotFoundError(path)

    monkeypatch.setattr(files_start, "open_binary", missing)
    resumed = read(source(orders), point)
    assert [r.external_id for r in resumed] == ["90000001"]
    assert proofs == [("MainThread", True)]


def test_a_proof_never_read_lets_go_of_its_file(orders: Path, opened: list[Any]) -> None:
    _, point = whole_read(orders)
    src = source(orders)
    src.resume_from(Stream.ORDERS, point)
    src.close()  # a run that failed before the stream's read
    assert len(opened) == 1 and opened[0].closed
    again = source(orders)
    again.resume_from(Stream.ORDERS, point)
    again.resume_from(Stream.ORDERS, None)  # another point, or none: the proof is let go
    assert len(opened) == 2 and opened[1].closed
    again.close()


def test_read_here_the_pull_gives_every_point_before_the_first_read(tmp_path: Path) -> None:
    """``engine.read_ahead.reader`` in the run's process: the orders' point reaches the
    source before the customers are read, so their start is proved beside that read."""
    calls: list[tuple[str, Stream]] = []

    class Recording(FilesSource):
        def resume_from(self, stream: Stream, point: str | None) -> None:
            if point is not None:
                calls.append(("point", stream))
            super().resume_from(stream, point)

        def read(self, stream: Stream, since: datetime | None, until: datetime) -> Any:
            calls.append(("read", stream))
            return super().read(stream, since, until)

    site = make_site(tmp_path / "site", "sqlite://", customers=20)
    files = {s: {"path": str(site.data / f"{s}.{x}")} for s, x in _EXPORTS}
    src = Recording({"kind": "files", **files}, ConnectorContext("shop", site.data))
    reads = [Read(Stream.CUSTOMERS, None), Read(Stream.ORDERS, None, "lines-v2|x|1|1|d")]
    with reader(src, "shop", reads, UNTIL, 1000, None) as found:
        list(found.arriving(reads))
    src.close()
    assert calls[:2] == [("point", Stream.ORDERS), ("read", Stream.CUSTOMERS)]


_EXPORTS = (("customers", "csv"), ("orders", "jsonl"))


def test_a_shorter_file_is_read_whole(orders: Path, prefix_block: None) -> None:
    _, point = whole_read(orders)
    text = orders.read_text(encoding="utf-8").splitlines()
    orders.write_text("\n".join(text[:-2]) + "\n", encoding="utf-8")
    assert read(source(orders), point) == whole_read(orders)[0]


def test_an_unfinished_last_line_is_read_again_once_finished(orders: Path) -> None:
    finished = new_order(1)
    with orders.open("a", encoding="utf-8") as handle:
        handle.write(finished[:40])  # a line still being written: no line break yet
    before, point = whole_read(orders)
    assert isinstance(before[-1], RecordIssue)  # read as it stood: malformed
    with orders.open("a", encoding="utf-8") as handle:
        handle.write(finished[40:] + "\n")
    resumed = read(source(orders), point)
    assert [r.external_id for r in resumed] == ["90000001"]
    assert resumed == [r for r in whole_read(orders)[0] if r.external_id == "90000001"]


def test_a_point_made_with_another_mapping_is_not_used(orders: Path) -> None:
    _, point = whole_read(orders)
    append(orders, new_order(1))
    other = source(orders, columns={"total": "total_discount"})
    assert read(other, point) == read(source(orders, columns={"total": "total_discount"}))


@pytest.mark.parametrize(
    "spoil",
    [
        lambda p: "",
        lambda p: p.replace("lines-v2|", "lines-v0|"),  # another kind of point
        lambda p: "|".join([*p.split("|")[:2], "-1", *p.split("|")[3:]]),  # no length
        lambda p: "|".join([*p.split("|")[:3], "x", *p.split("|")[4:]]),  # no line count
        lambda p: "|".join(p.split("|")[:4]),  # no digest
        lambda p: p[:-1] + ("0" if p[-1] != "0" else "1"),  # another digest
    ],
)
def test_a_point_that_does_not_hold_is_read_whole(
    orders: Path, spoil: Callable[[str], str]
) -> None:
    whole, point = whole_read(orders)
    assert read(source(orders), spoil(point)) == whole


def test_a_read_cut_short_tells_no_point(orders: Path) -> None:
    src = source(orders)
    src.resume_from(Stream.ORDERS, None)
    items = src.read(Stream.ORDERS, None, UNTIL)
    next(iter(items))
    src.close()
    assert src.resume_point(Stream.ORDERS) is None


def test_a_csv_file_tells_no_point(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", "sqlite://", customers=5)
    config = {"kind": "files", "customers": {"path": str(site.data / "customers.csv")}}
    src = FilesSource(config, ConnectorContext(name="shop", config_dir=site.data))
    list(src.read(Stream.CUSTOMERS, None, UNTIL))
    assert src.resume_point(Stream.CUSTOMERS) is None


def test_a_reader_process_sends_the_point_and_the_whole_read_with_the_last_batch() -> None:
    batch = Batch(resume="lines-v1|digest|10|hash", position=10, whole=True)
    assert _unpacked(_packed(batch)) == batch


# -- the pull ----------------------------------------------------------------------------


@pytest.fixture
def store(state_url: str) -> Iterator[Store]:
    opened = Store(state_url)
    yield opened
    opened.close()


def pull(store: Store, path: Path, *, full: bool = False) -> PullStats:
    until = STORE_NOW + timedelta(days=1)
    return pull_source(
        store, "shop", source(path, updated_at="updated_at"), until=until,
        lookback=timedelta(minutes=10), full=full,
    )  # fmt: skip


def staged(store: Store) -> set[tuple[Any, ...]]:
    o = schema.orders
    with store.engine.connect() as conn:
        rows = conn.execute(select(o.c.external_id, o.c.updated_at, o.c.content_hash))
        return {tuple(row) for row in rows}


def test_a_pull_stages_what_was_appended_and_ends_as_a_whole_read_does(
    orders: Path, store: Store, state_url: str, tmp_path: Path
) -> None:
    first = pull(store, orders).streams["orders"]
    assert first.staged > 50
    kept = store.source_version("shop", "orders")
    assert kept is not None and "\nlines-v2|" in kept  # the point, kept with the version
    later = ("2026-11-01T13:00:00+03:00", "2026-11-01T14:00:00+03:00")  # after the store's
    append(orders, new_order(1, at=later[0]), new_order(2, at=later[1]))
    second = pull(store, orders).streams["orders"]
    assert (second.received, second.staged) == (2, 2)  # the rest was not read again
    fresh = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        pull(fresh, orders)
        assert staged(store) == staged(fresh)
    finally:
        fresh.close()
    assert store.cursor("shop", "orders") == datetime(2026, 11, 1, 11, tzinfo=UTC)


def test_a_pull_picks_up_an_order_changed_in_place(orders: Path, store: Store) -> None:
    pull(store, orders)
    text = orders.read_text(encoding="utf-8").splitlines()
    changed = json.loads(text[0])
    changed.update(status="refunded", updated_at="2026-11-01T13:00:00+03:00")
    text[0] = json.dumps(changed, ensure_ascii=False)
    orders.write_text("\n".join(text) + "\n", encoding="utf-8")
    again = pull(store, orders).streams["orders"]
    assert again.staged == 1 and again.received >= 1
    o = schema.orders
    with store.engine.connect() as conn:
        status = conn.execute(select(o.c.status).where(o.c.external_id == changed["id"]))
        assert status.scalar() == "refunded"


def test_a_full_pull_reads_the_whole_file_whatever_its_point(orders: Path, store: Store) -> None:
    before = pull(store, orders).streams["orders"].received
    append(orders, new_order(1))
    assert pull(store, orders, full=True).streams["orders"].received == before + 1


def test_a_point_of_the_sha_256_version_is_read_whole_once_then_resumed(orders: Path) -> None:
    """Points made before the lines' hash became XXH3-128 (``lines-v1``, a SHA-256
    digest) prove nothing now: the grown file is read whole, and the point that read
    reaches is of this version, which the next read resumes from."""
    import hashlib

    before = orders.read_bytes()
    lines = before.count(b"\n")
    old = f"lines-v1|{source(orders)._reading(source(orders).config.files()[Stream.ORDERS])}"
    old += f"|{len(before)}|{lines}|{hashlib.sha256(before).hexdigest()}"
    append(orders, new_order(1))
    src = source(orders)
    assert read(src, old) == whole_read(orders)[0]  # the old point was not trusted
    point = src.resume_point(Stream.ORDERS)
    assert point is not None and point.startswith("lines-v2|")
    append(orders, new_order(2))
    resumed = read(source(orders), point)
    assert [r.external_id for r in resumed if isinstance(r, Record)] == ["90000002"]
