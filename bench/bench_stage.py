"""Staging throughput: sample records written into the state database by ``Store.stage``.

The sample store (``crmsync.sample``, about 5 orders per customer) is generated afresh
for each stream, customers first, then orders, then carts, as a pull reads them, and
staged in batches of the pull's size (``engine.pull.BATCH``), each stream's batches
inside ``Store.loading`` as a pull stages them (a first load then builds the table's
secondary indexes once at its end; ``--keep-indexes`` keeps them up row by row instead,
for comparison, its figures recorded under ``<engine>_<customers>_kept_``). Only the
time inside ``Store.stage`` and ``Store.loading`` counts: generating the records is not
staging. Reported per engine and size: records/s over the whole store and per stream
(index building included, also given on its own), over the first and the last tenth of
the orders' batches (the rate must stay flat as the tables grow), and, with ``--again``,
the rate of a second pass over the same records (all unchanged, as a re-read of a
lookback window finds them). Figures of other engines and sizes already recorded are kept.

    .venv/bin/python -m bench.bench_stage [--customers N] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack

from bench.databases import state_url
from bench.results import RESULTS, Figure, record
from crmsync.records import Cart, Customer, Order, Stream
from crmsync.sample import SampleSpec, iter_store
from engine.pull import BATCH
from state.store import Store

TARGETS = {"sqlite": 50_000, "postgresql": 30_000}  # records/s, issue 10
STREAMS = {Stream.CUSTOMERS: Customer, Stream.ORDERS: Order, Stream.CARTS: Cart}
Staged = Customer | Order | Cart


def batches(spec: SampleSpec, stream: Stream, size: int) -> Iterator[list[Staged]]:
    kind = STREAMS[stream]
    batch: list[Staged] = []
    for item in iter_store(spec):
        if isinstance(item, kind):
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


class Pass:
    """Seconds and records per stream of one pass over the store, batch by batch, and the
    seconds each stream's load spent on its indexes (dropping and building them)."""

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[int, float]]] = {}
        self.indexing: dict[str, float] = {}

    def add(self, stream: Stream, records: int, seconds: float) -> None:
        self.batches.setdefault(stream.value, []).append((records, seconds))

    def add_indexing(self, stream: Stream, seconds: float) -> None:
        self.indexing[stream.value] = self.indexing.get(stream.value, 0.0) + seconds

    def rate(self, stream: str | None = None) -> int:
        """Records/s of one stream (None: all), its index building included."""
        streams = [s for s in self.batches if stream in {None, s}]
        records = sum(n for s in streams for n, _ in self.batches[s])
        seconds = sum(t for s in streams for _, t in self.batches[s])
        return round(records / (seconds + sum(self.indexing.get(s, 0.0) for s in streams)))

    def tenth(self, stream: str, last: bool) -> int:
        """The rate over the first or last tenth of a stream's batches (at least one)."""
        batches = self.batches[stream]
        count = max(1, len(batches) // 10)
        chosen = batches[-count:] if last else batches[:count]
        return round(sum(n for n, _ in chosen) / sum(t for _, t in chosen))

    @property
    def records(self) -> int:
        return sum(n for batches in self.batches.values() for n, _ in batches)

    @property
    def seconds(self) -> float:
        batches = sum(t for batches in self.batches.values() for _, t in batches)
        return batches + sum(self.indexing.values())


def stage_store(store: Store, spec: SampleSpec, size: int, keep_indexes: bool) -> Pass:
    measured = Pass()
    for stream in STREAMS:
        mark = time.perf_counter()
        with ExitStack() as loading:
            if not keep_indexes:
                loading.enter_context(store.loading(stream))
            measured.add_indexing(stream, time.perf_counter() - mark)
            for batch in batches(spec, stream, size):
                started = time.perf_counter()
                stats = store.stage("bench", stream, batch)
                measured.add(stream, stats.received, time.perf_counter() - started)
            mark = time.perf_counter()
        measured.add_indexing(stream, time.perf_counter() - mark)
        print(f"  {stream.value:>9}: {measured.rate(stream.value):>9,}/s", flush=True)
    return measured


def previous_figures() -> dict[str, Figure]:
    """The figures of other engines and sizes already in the results file, kept."""
    if not RESULTS.exists():
        return {}
    kept = json.loads(RESULTS.read_text(encoding="utf-8")).get("stage", {})
    return {k: v for k, v in kept.items() if k not in {"measured_at", "machine"}}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_stage")
    parser.add_argument("--customers", type=int, default=10_000, help="x5 orders each")
    parser.add_argument("--engine", choices=sorted(TARGETS), default="sqlite")
    parser.add_argument("--batch", type=int, default=BATCH, help="records per Store.stage")
    parser.add_argument("--again", action="store_true", help="stage the same store twice")
    parser.add_argument(
        "--keep-indexes",
        action="store_true",
        help="keep secondary indexes up row by row on a first load (for comparison)",
    )
    args = parser.parse_args(argv)
    spec = SampleSpec(customers=args.customers)
    indexes = "kept" if args.keep_indexes else "deferred"
    print(f"{args.engine}: {args.customers:,} customers, batch {args.batch}, indexes {indexes}")
    load = os.getloadavg()[0]  # the machine is shared: how busy it was when the run began
    with state_url(args.engine, "bench_stage") as url:
        try:
            store = Store(url)
        except Exception as exc:  # the server is down: say so in one line
            print(f"cannot open {args.engine}: {exc}", file=sys.stderr)
            return 1
        try:
            first = stage_store(store, spec, args.batch, args.keep_indexes)
            again = stage_store(store, spec, args.batch, args.keep_indexes) if args.again else None
        finally:
            store.close()
    # a comparison run keeps its own figures beside those of the code as a pull runs it
    prefix = f"{args.engine}_{args.customers}" + ("_kept" if args.keep_indexes else "")
    figures: dict[str, Figure] = {
        f"{prefix}_records": first.records,
        f"{prefix}_batch": args.batch,
        f"{prefix}_records_per_s": first.rate(),
        # flat as the tables grow: the largest stream's last tenth against its first
        f"{prefix}_orders_first_tenth_per_s": first.tenth(Stream.ORDERS.value, last=False),
        f"{prefix}_orders_last_tenth_per_s": first.tenth(Stream.ORDERS.value, last=True),
        f"{prefix}_seconds": round(first.seconds, 2),
        f"{prefix}_indexes": indexes,  # deferred: built at the end of a first load
        f"{prefix}_index_seconds": round(sum(first.indexing.values()), 2),
        f"{prefix}_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        f"{prefix}_load_average_at_start": round(load, 2),
        f"{prefix}_at_or_above_target": str(first.rate() >= TARGETS[args.engine]),
        f"{args.engine}_target_records_per_s": TARGETS[args.engine],
    }
    figures.update({f"{prefix}_{s}_per_s": first.rate(s) for s in first.batches})
    if again is not None:
        figures[f"{prefix}_unchanged_records_per_s"] = again.rate()
    path = record("stage", {**previous_figures(), **figures})
    for key, value in figures.items():
        print(f"{key:>48}: {value}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
