"""The files source's read rate per stream: records (and issues) out of export files.

Generates a sample store (``crmsync.sample``, dirty rows included) in a temporary
directory, then reads each stream with ``FilesSource.read`` alone (no staging), best of
``--repeat`` rounds, each with a fresh source as a run makes one (so e-mail validations
are not remembered from the round before). Beside it, the rate of splitting the same
files into rows only (csv module / orjson, no mapping), which bounds what mapping can
reach. CPU seconds are reported too: on a shared machine they vary less than wall time.

    .venv/bin/python -m bench.bench_read [--customers N] [--repeat N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench.results import record
from connectors.files import FilesSource
from connectors.files_rows import csv_rows, jsonl_rows, open_binary, open_text
from connectors.records.fields import clear_caches
from crmsync.contract import ConnectorContext
from crmsync.records import RecordIssue, Stream
from crmsync.sample import SampleSpec, write_files

UNTIL = datetime(2100, 1, 1, tzinfo=UTC)
FILES = {
    Stream.CUSTOMERS: "customers.csv",
    Stream.ORDERS: "orders.jsonl",
    Stream.CARTS: "carts.jsonl",
}


def config(base: Path) -> dict[str, Any]:
    """The sample export's own columns (as config.example.toml maps them)."""
    return {
        "kind": "files",
        "customers": {"path": str(base / FILES[Stream.CUSTOMERS]), "updated_at": "updated_at"},
        "orders": {"path": str(base / FILES[Stream.ORDERS]), "updated_at": "updated_at"},
        "carts": {
            "path": str(base / FILES[Stream.CARTS]),
            "updated_at": "updated_at",
            "columns": {"converted": "completed_at", "checkout_url": "abandoned_checkout_url"},
        },
    }


def rows_only(path: Path) -> Iterator[Any]:
    if path.suffix == ".csv":
        with open_text(path, "utf-8") as handle:
            yield from csv_rows(handle, ",")
    else:
        with open_binary(path) as handle:
            yield from jsonl_rows(handle, "utf-8")


Timing = tuple[int, int, float, float]  # items, issues, wall seconds, CPU seconds


def timed(run: Callable[[], Iterator[Any]]) -> Timing:
    """What consuming ``run()`` took, after forgetting every remembered value."""
    clear_caches()
    started, cpu = time.perf_counter(), time.process_time()
    count = issues = 0
    for item in run():
        count += 1
        issues += isinstance(item, RecordIssue)
    return count, issues, time.perf_counter() - started, time.process_time() - cpu


def measure(best: dict[str, Timing], key: str, run: Callable[[], Iterator[Any]]) -> None:
    """Keeps the fastest (wall) of the rounds under ``key``."""
    found = timed(run)
    if key not in best or found[2] < best[key][2]:
        best[key] = found


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_read")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_read_") as temporary:
        base = args.keep or Path(temporary)
        base.mkdir(parents=True, exist_ok=True)
        spec = SampleSpec(customers=args.customers, orders_per_customer=5.0, dirty_rate=0.01)
        started = time.perf_counter()
        write_files(spec, base)
        print(f"store of {args.customers:,} customers in {time.perf_counter() - started:.1f} s")
        context = ConnectorContext(name="bench", config_dir=base)
        best: dict[str, Timing] = {}
        for _ in range(args.repeat):
            for stream, name in FILES.items():
                source = FilesSource(config(base), context)  # fresh, as each run makes one
                measure(best, f"{stream}", partial(source.read, stream, None, UNTIL))
                measure(best, f"{stream}_rows_only", partial(rows_only, base / name))
    figures: dict[str, float | int | str] = {"customers": args.customers}
    total_items = total_wall = total_cpu = 0.0
    for stream in FILES:
        items, issues, wall, cpu = best[f"{stream}"]
        rows, _, rows_wall, _ = best[f"{stream}_rows_only"]
        figures[f"{stream}_items"] = items
        figures[f"{stream}_issues"] = issues
        figures[f"{stream}_rps"] = round(items / wall)
        figures[f"{stream}_cpu_rps"] = round(items / cpu)
        figures[f"{stream}_rows_only_rps"] = round(rows / rows_wall)
        total_items, total_wall, total_cpu = total_items + items, total_wall + wall, total_cpu + cpu
    figures["all_rps"] = round(total_items / total_wall)
    figures["all_cpu_rps"] = round(total_items / total_cpu)
    figures["all_seconds"] = round(total_wall, 2)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    path = record("read", figures)
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
