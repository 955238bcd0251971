"""``python -m bench.e2e``: the sizes and engines asked for, measured, saved and printed."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from bench.e2e.measure import bench_one
from bench.e2e.options import ENGINES, Options
from bench.e2e.output import describe_source, save, table
from bench.results import Figure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--sizes", default="10000,100000", help="customers, comma-separated")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--latency", type=float, default=0.08, help="seconds per API call")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Options.work, help="stores and runs")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder")
    parser.add_argument(
        "--source",
        type=Path,
        help="run crmsync from this source tree instead of the installed one, e.g. "
        "`git archive <commit> | tar -x -C DIR` for a before/after on the same stores",
    )
    args = parser.parse_args(argv)
    options = Options(args.latency, args.connections, args.work, keep=args.keep, source=args.source)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    figures: dict[str, Figure] = {}
    configs: list[tuple[str, int]] = []
    source = describe_source(options.source)
    for size in sizes:
        contact: dict[str, Figure] | None = None
        for engine in engines:
            found, contact = bench_one(size, engine, options, contact=contact)
            figures.update(found)
            # per size and engine: sizes measured at other times keep their own
            figures[f"{engine}.{size}.crmsync_source"] = source
            figures[f"{engine}.{size}.latency_s"] = options.latency
            figures[f"{engine}.{size}.connections"] = options.connections
            figures[f"{engine}.{size}.measured_at"] = datetime.now(UTC).isoformat(
                timespec="seconds"
            )
            configs.append((engine, size))
    path = save(figures)
    print(table(figures, configs))
    print(f"  -> {path}")
    return 0
