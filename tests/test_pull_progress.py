"""How far a read got: a files source tells the bytes of its file read so far, and the
pull turns that into an estimated total of records for the stream's progress bar, in the
run's process and through the reader processes alike."""

from __future__ import annotations

import gzip
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from crmsync.records import Record, Stream
from state.store import Store
from tests.e2e import Site, make_site
from tests.test_read_ahead import UNTIL, children, pull, recipe_of

__all__ = ["children"]


class Recording:
    """A ``Progress`` that keeps every call."""

    def __init__(self) -> None:
        self.done: dict[str, int] = defaultdict(int)
        self.estimates: dict[str, list[int]] = defaultdict(list)
        self.finished: dict[str, int | None] = {}
        self.totals: dict[str, list[int | None]] = defaultdict(list)  # each start's

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        self.done[stage] = 0
        self.totals[stage].append(total)

    def grow(self, stage: str, n: int) -> None:
        return None

    def estimate(self, stage: str, total: int) -> None:
        self.estimates[stage].append(total)

    def advance(self, stage: str, n: int) -> None:
        self.done[stage] += n

    def finish(self, stage: str, done: int | None = None) -> None:
        self.finished[stage] = done

    def close(self) -> None:
        return None


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", 300)


def test_a_files_read_tells_how_far_into_its_file_it_got(site: Site) -> None:
    source = recipe_of(site).build()
    try:
        for stream in (Stream.CUSTOMERS, Stream.ORDERS):  # a CSV and a JSON-lines file
            size = source.size(stream)
            assert size and source.position(stream) is None  # no read in progress
            seen: list[int] = []
            for item in source.read(stream, None, UNTIL):
                if isinstance(item, Record):
                    seen.append(source.position(stream) or 0)
            assert 0 < seen[0] <= seen[-1] <= size
            assert seen == sorted(seen)  # it only moves forward
            assert seen[-1] == size  # the whole file was read
    finally:
        source.close()


def test_a_compressed_file_tells_its_compressed_bytes(site: Site) -> None:
    plain = site.data / "orders.jsonl"
    packed = site.data / "orders.jsonl.gz"
    with plain.open("rb") as raw, gzip.open(packed, "wb") as out:
        shutil.copyfileobj(raw, out)
    site.config.write_text(site.config.read_text().replace("orders.jsonl", "orders.jsonl.gz"))
    source = recipe_of(site).build()
    try:
        size = source.size(Stream.ORDERS)
        assert size == packed.stat().st_size < plain.stat().st_size
        last = 0
        for item in source.read(Stream.ORDERS, None, UNTIL):
            if isinstance(item, Record):
                last = source.position(Stream.ORDERS) or 0
        assert last == size
    finally:
        source.close()


@pytest.mark.parametrize("ahead", [False, True], ids=["in-process", "reader-processes"])
def test_each_streams_bar_gets_a_total_estimated_from_how_far_its_read_got(
    site: Site, children: list[Any], ahead: bool
) -> None:
    store = Store(f"sqlite:///{site.root / f'estimate-{ahead}.db'}")
    shown = Recording()
    try:
        stats = pull(store, recipe_of(site), ahead=ahead, progress=shown)
    finally:
        store.close()
    assert bool(children) is ahead
    for stream in ("customers", "orders", "carts"):
        stage = f"pull shop.{stream}"
        records = shown.done[stage]
        assert records > 97  # more than one batch (the tests' batches hold 97)
        estimates = shown.estimates[stage]
        assert estimates, stage
        # the last estimate, a batch before the end, is within a batch's share of the count
        assert abs(estimates[-1] - records) <= max(97, records // 10), (stage, estimates)
        received = stats.streams[stream].received
        assert shown.finished[stage] == received


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_the_profiles_bar_moves_while_people_are_planned_toward_an_expected_total(
    tmp_path: Path, workers: int
) -> None:
    from crmsync.runs import RunOptions
    from engine.pipeline import run_pipeline
    from engine.resolve import load_config
    from tests.e2e import STORE_NOW

    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", 9000, workers=workers)
    config = load_config(site.config)
    spec = next(iter(config.pipelines.values()))
    shown = Recording()
    store = Store(config.state_url)
    try:
        report = run_pipeline(config, spec, store, RunOptions(as_of=STORE_NOW, progress=shown))
    finally:
        store.close()
    # a first run expects the customers staged (people known only by orders come on top)
    customers = report.pulled["shop.customers"]["staged"]
    assert shown.totals["profiles"] == [customers] and report.profiles >= customers
    # advanced as people were planned, a chunk at a time, up to everyone
    assert shown.done["profiles"] == pytest.approx(report.profiles, abs=4096)
    assert shown.done["profiles"] > 0
    assert shown.finished["profiles"] == report.profiles
