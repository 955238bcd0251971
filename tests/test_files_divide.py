"""A large JSON-lines export read by several readers at once, each a part of it
(``Divisible``): the parts read in order yield exactly what one whole read yields, with
the same line numbers, and the last part tells the whole file's resume point."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.files import FilesSource
from connectors.files_rows import BLOCK
from crmsync.contract import ConnectorContext, Divisible, Span
from crmsync.records import RecordIssue, Stream
from tests.e2e import make_site

UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated store's exports, with dirty rows (malformed lines among the orders),
    about 600 orders over several of the reader's blocks."""
    root = tmp_path_factory.mktemp("divide")
    site = make_site(root / "site", "sqlite://", customers=120, dirty_rate=0.05)
    orders = site.data / "orders.jsonl"
    with orders.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "broken",\n')  # a bad line near the end: numbered as whole
    assert orders.stat().st_size > 3 * BLOCK
    return site.data


def source(path: Path, stream: str = "orders") -> FilesSource:
    config = {"kind": "files", stream: {"path": str(path)}}
    return FilesSource(config, ConnectorContext(name="shop", config_dir=path.parent))


def read_whole(path: Path) -> tuple[list[Any], str | None]:
    src = source(path)
    found = list(src.read(Stream.ORDERS, None, UNTIL))
    return found, src.resume_point(Stream.ORDERS)


def read_parts(path: Path, spans: list[Span]) -> tuple[list[Any], list[str | None]]:
    """Each span read by a source of its own, as each reader process builds one."""
    found: list[Any] = []
    points: list[str | None] = []
    for span in spans:
        src = source(path)
        src.read_span(Stream.ORDERS, span)
        found += src.read(Stream.ORDERS, None, UNTIL)
        points.append(src.resume_point(Stream.ORDERS))
    return found, points


def test_the_files_source_is_divisible() -> None:
    assert issubclass(FilesSource, Divisible)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_the_parts_read_in_order_are_one_whole_read(site_data: Path, parts: int) -> None:
    path = site_data / "orders.jsonl"
    spans = source(path).divide(Stream.ORDERS, parts)
    assert len(spans) == parts
    content = path.read_bytes()
    assert spans[0].start == 0 and spans[-1].end is None
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start and before.start < after.start
        assert content[after.start - 1 : after.start] == b"\n"  # each starts a line
    sizes = [(s.end or len(content)) - s.start for s in spans]
    assert max(sizes) < 2 * len(content) / parts  # about as many bytes each

    whole, point = read_whole(path)
    found, points = read_parts(path, spans)
    assert found == whole
    issues = [item for item in found if isinstance(item, RecordIssue)]
    lines = len(content.splitlines())
    assert any(i.reason.startswith(f"line {lines}: malformed JSON") for i in issues)
    assert points == [None] * (parts - 1) + [point]  # the whole file's point, from the last


def test_the_point_of_a_divided_read_resumes_the_next_read(site_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_bytes((site_data / "orders.jsonl").read_bytes())
    spans = source(path).divide(Stream.ORDERS, 2)
    _, points = read_parts(path, spans)
    at = "2026-10-30T10:00:00+03:00"
    extra = {
        "id": "90000001", "customer_id": "100001", "email": "new@example.com",
        "created_at": at, "updated_at": at, "status": "paid", "currency": "TRY",
        "total_price": "10.00",
        "line_items": [{"sku": "X", "title": "X", "quantity": 1, "price": "10.00"}],
    }  # fmt: skip
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(extra) + "\n")
    src = source(path)
    src.resume_from(Stream.ORDERS, points[-1])
    resumed = list(src.read(Stream.ORDERS, None, UNTIL))
    assert [getattr(r, "external_id", None) for r in resumed] == ["90000001"]


def test_a_read_after_a_span_reads_what_it_is_told(site_data: Path) -> None:
    path = site_data / "orders.jsonl"
    src = source(path)
    first, *_ = src.divide(Stream.ORDERS, 2)
    src.read_span(Stream.ORDERS, first)
    part = list(src.read(Stream.ORDERS, None, UNTIL))
    src.read_span(Stream.ORDERS, None)
    assert list(src.read(Stream.ORDERS, None, UNTIL)) == read_whole(path)[0]
    assert 0 < len(part) < len(read_whole(path)[0])


def test_what_cannot_be_cut_at_a_line_is_one_span(site_data: Path, tmp_path: Path) -> None:
    whole = [Span(0, None)]
    # a CSV row may hold line breaks inside quotes
    assert source(site_data / "customers.csv", "customers").divide(Stream.CUSTOMERS, 4) == whole
    packed = tmp_path / "orders.jsonl.gz"
    packed.write_bytes(gzip.compress((site_data / "orders.jsonl").read_bytes()))
    assert source(packed).divide(Stream.ORDERS, 4) == whole  # cannot be entered part-way
    one = tmp_path / "one.jsonl"
    one.write_text('{"id": "1"}', encoding="utf-8")  # one line, no line break
    assert source(one).divide(Stream.ORDERS, 3) == whole
    assert source(site_data / "orders.jsonl").divide(Stream.ORDERS, 1) == whole


def test_a_small_file_gives_fewer_parts_than_asked(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    path.write_text('{"id": "1"}\n{"id": "2"}\n', encoding="utf-8")
    spans = source(path).divide(Stream.ORDERS, 8)
    assert 1 < len(spans) <= 2
    assert [s.start for s in spans] == [0, 12][: len(spans)]
