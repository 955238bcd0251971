"""The read-ahead bench reads a small store whole and in parts, takes the same records
both ways, and writes its figures to the results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_read_ahead, results
from engine import read_ahead


def test_the_bench_reads_a_store_whole_and_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(read_ahead, "reader_count", lambda: 2)
    assert bench_read_ahead.main(["--customers", "300", "--keep", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["read_ahead"]
    assert found["records"] > 300 and found["readers"] == 2
    assert 0.5 < found["orders_share_of_bytes"] < 1
    assert found["whole_s"] > 0 and found["divided_s"] > 0
