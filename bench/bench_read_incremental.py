"""The files source's incremental read: the 1 %-changed store, with and without the
window prefilter (``connectors.files_window``).

Reads the e2e bench's store (``bench.e2e.store``: generated once into ``--cache``) from
scratch once, which gives the first read's cost and each stream's cursor (the newest
``updated_at`` read, as a run keeps it). A copy of the store then gets the e2e bench's
1 % change, and each stream is read since its cursor less the default lookback, until
the e2e runs' clock: with the prefilter ("after") and with the full path alone
("before"), by turns, each read with a fresh source; the median CPU seconds of
``--repeat`` rounds are kept (on a machine shared with other work a best-of picks one
lucky round). Both reads must yield the same records and issues.

    .venv/bin/python -m bench.bench_read_incremental [--customers N] [--repeat N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any
from unittest import mock

from bench.bench_read import FILES, config
from bench.e2e.store import as_of, change_one_percent, copy_store, store_for
from bench.results import record
from connectors import files_window
from connectors.files import FilesSource
from connectors.records.fields import clear_caches
from crmsync.contract import ConnectorContext
from crmsync.records import RecordIssue, Stream

LOOKBACK = timedelta(minutes=10)  # the pipeline's default lookback_minutes


def cpu(read: Callable[[], list[Any]]) -> tuple[list[Any], float]:
    """What ``read`` yields and the CPU seconds it took, after forgetting every
    remembered value."""
    clear_caches()
    started = time.process_time()
    found = read()
    return found, time.process_time() - started


def reader(base: Path, stream: Stream, since: datetime | None, until: datetime) -> list[Any]:
    source = FilesSource(config(base), ConnectorContext(name="bench", config_dir=base))
    return list(source.read(stream, since, until))


def newest(base: Path, stream: Stream, until: datetime) -> list[datetime]:
    """A read from scratch, kept as a run keeps it: the cursor, the newest ``updated_at``
    read (no later than ``until``)."""
    source = FilesSource(config(base), ConnectorContext(name="bench", config_dir=base))
    found = datetime.min.replace(tzinfo=until.tzinfo)
    for item in source.read(stream, None, until):
        at = getattr(item, "updated_at", None)
        if at is not None and at > found:
            found = at
    return [min(found, until)]


def without_prefilter(read: Callable[[], list[Any]]) -> Callable[[], list[Any]]:
    def full_path() -> list[Any]:
        with mock.patch.object(files_window, "prefilter", lambda *args: None):
            return read()

    return full_path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_read_incremental")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best counts")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "crmsync_bench_stores"
    )
    args = parser.parse_args(argv)
    store = store_for(args.customers, args.cache)
    until = datetime.fromisoformat(as_of())
    figures: dict[str, float | int | str] = {"customers": args.customers}
    cursors: dict[Stream, datetime] = {}
    first_cpu = 0.0
    for stream in FILES:
        (cursors[stream],), seconds = cpu(partial(newest, store, stream, until))
        first_cpu += seconds
        print(f"{stream}: first read {seconds:.2f} s CPU, cursor {cursors[stream].isoformat()}")
    figures["first_read_cpu_s"] = round(first_cpu, 2)
    with tempfile.TemporaryDirectory(prefix="bench_read_incremental_") as temporary:
        data = Path(temporary) / "data"
        copy_store(store, data)
        changed = change_one_percent(data)
        figures["changed_customers"] = len(changed)
        taken: dict[str, list[float]] = {"before": [], "after": []}
        for round_ in range(args.repeat):
            totals = {"before": 0.0, "after": 0.0}
            for stream in FILES:
                since = cursors[stream] - LOOKBACK

                def read(stream: Stream = stream, since: datetime = since) -> list[Any]:
                    return reader(data, stream, since, until)

                ways = {"after": read, "before": without_prefilter(read)}
                order = ["after", "before"] if round_ % 2 else ["before", "after"]
                found = {way: cpu(ways[way]) for way in order}  # by turns: either may go first
                (after, after_cpu), (before, before_cpu) = found["after"], found["before"]
                if after != before:
                    raise AssertionError(f"{stream}: the prefilter changed what the read yields")
                figures[f"{stream}_items"] = sum(not isinstance(x, RecordIssue) for x in after)
                figures[f"{stream}_issues"] = sum(isinstance(x, RecordIssue) for x in after)
                print(f"{stream}: before {before_cpu:.2f} s, after {after_cpu:.2f} s CPU")
                for way, seconds in (("before", before_cpu), ("after", after_cpu)):
                    taken.setdefault(f"{stream}_{way}", []).append(seconds)
                    totals[way] += seconds
            for way, seconds in totals.items():
                taken[way].append(seconds)
    # medians: on a machine shared with other work a best-of picks one lucky round
    for key, values in taken.items():
        figures[f"{key}_cpu_s"] = round(median(values), 2)
    ratios = [b / a for b, a in zip(taken["before"], taken["after"], strict=True)]
    figures["speedup"] = round(median(ratios), 2)
    figures["before_of_first"] = round(median(taken["before"]) / first_cpu, 3)
    figures["after_of_first"] = round(median(taken["after"]) / first_cpu, 3)
    figures["rounds"] = args.repeat
    path = record("read_incremental", figures)
    for key, value in figures.items():
        print(f"{key:>26}: {value}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
