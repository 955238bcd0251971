"""Reading ahead with the largest export read whole or in parts (``Divisible``), without
the staging: how long the readers take to build a sample store's streams when the run's
process only takes their batches, as on a machine with a core to spare for staging.

A first sync's pull runs one reader per CPU beside the run's process, which stages.
On a 2-core machine the three share two cores and the pull is bound by their CPU
together; with more cores it is bound by the busiest reader, which without division
reads the whole orders export (about 80 % of a store's bytes). This bench takes the run
out of the contest: the readers' wall time, read whole and in parts, one reader per CPU.

    .venv/bin/python -m bench.bench_read_ahead [--customers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from bench.bench_read import FILES
from bench.results import record
from connectors.files import FilesSource
from crmsync.contract import ConnectorContext, Source
from crmsync.sample import SampleSpec, write_files
from engine import read_ahead
from engine.read_ahead import Read, SourceRecipe, reader

UNTIL = datetime(2100, 1, 1, tzinfo=UTC)


def read_all(data: Path, divide: bool) -> tuple[float, int]:
    """Seconds until every batch of every stream was taken, and the records taken."""
    config = {stream.value: {"path": str(data / name)} for stream, name in FILES.items()}
    context = ConnectorContext(name="shop", config_dir=data)
    recipe = SourceRecipe(FilesSource, {"kind": "files", **config}, context)
    source = recipe.build()
    reads = [Read(stream, None) for stream in FILES]
    taken = 0
    started = time.perf_counter()
    with (
        mock.patch.object(read_ahead, "divided", read_ahead.divided if divide else _whole),
        reader(source, "shop", reads, UNTIL, 20_000, recipe) as batches,
    ):
        for _, batch, _ in batches.arriving(reads):
            taken += len(batch.records)
    source.close()
    return time.perf_counter() - started, taken


def _whole(
    _source: Source, reads: Sequence[Read], sizes: Sequence[int], _count: int
) -> tuple[list[Read], list[int], dict[Read, list[Read]]]:
    """``read_ahead.divided`` that divides nothing: the lanes dealt as before ``Divisible``."""
    return list(reads), list(sizes), {}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="generate the store here and keep it")
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="crmsync-bench-read-ahead-"))
    data = folder / f"c{args.customers}"
    if not (data / "orders.jsonl").exists():
        write_files(SampleSpec(customers=args.customers, seed=7, dirty_rate=0.01), data)
    sizes = {s.value: (data / name).stat().st_size for s, name in FILES.items()}
    whole, records = read_all(data, divide=False)
    parts, again = read_all(data, divide=True)
    assert again == records, "reading in parts took other records"
    figures = {
        "customers": args.customers,
        "readers": read_ahead.reader_count(),
        "records": records,
        "orders_share_of_bytes": round(sizes["orders"] / sum(sizes.values()), 3),
        "whole_s": round(whole, 2),
        "divided_s": round(parts, 2),
        "whole_over_divided": round(whole / parts, 2),
    }
    path = record("read_ahead", figures)
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
