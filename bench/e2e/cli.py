"""``python -m bench.e2e``: the sizes, engines and worker counts asked for, measured, saved
and printed."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from bench.e2e import bytecode
from bench.e2e.fake import Audience
from bench.e2e.figures import throughput
from bench.e2e.measure import bench_one
from bench.e2e.options import DESTINATIONS, ENGINES, Options, Size, key_prefix, parse_size
from bench.e2e.output import describe_source, save, table
from bench.e2e.vendors import PER_TEN_SECONDS
from bench.e2e.workers import BROKERS, BenchRefused, parse_workers, refuse_sqlite
from bench.results import Figure, python_speed

# what the fake enforces, beside the figures (bench.e2e.vendors)
LIMITS = {
    "klaviyo": "per endpoint, the spec's burst per second and steady rate per minute "
    "(x-klaviyo-ratelimit; import jobs and list members 10/s, 150/min)",
    "hubspot": f"{PER_TEN_SECONDS} calls in any 10 s (Free and Starter)",
}


def parse(argv: list[str]) -> tuple[Options, list[Size], list[str]]:
    """The options, sizes and engines asked for; what cannot be measured is refused here
    (argparse's error: exit 2 with the reason), before any store is built."""
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="customers, comma-separated; `cdnow` names the CDNOW store (bench.e2e.cdnow)",
    )
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
    parser.add_argument(
        "--workers",
        default="0",
        help="comma-separated: 0 runs in one process, N on N Celery workers started here "
        "(`crmsync worker --pool solo` each; PostgreSQL only)",
    )
    parser.add_argument("--broker", choices=sorted(BROKERS), default="redis")
    parser.add_argument(
        "--destination",
        choices=DESTINATIONS,
        default="mailchimp",
        help="the fake vendor the runs push to, with --latency per call; Klaviyo and HubSpot "
        "with their published rate limits (bench.e2e.vendors)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes takes customer counts or `cdnow`: {args.sizes!r}")
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    try:
        workers = parse_workers(args.workers)
        refuse_sqlite(engines, workers)
    except BenchRefused as exc:
        parser.error(str(exc))
    options = Options(
        args.latency,
        args.connections,
        args.work,
        keep=args.keep,
        source=args.source,
        workers=workers,
        broker=args.broker,
        destination=args.destination,
    )
    return options, sizes, engines


def main(argv: list[str]) -> int:
    options, sizes, engines = parse(argv)
    figures: dict[str, Figure] = {}
    configs: list[tuple[str, Size, int]] = []
    source = describe_source(options.source)
    speed = python_speed()  # this machine's, measured before the runs load it
    print(f"  bytecode cache filled in {bytecode.fill(options):.1f} s", flush=True)
    for size in sizes:
        contact: dict[str, Figure] | None = None
        for engine in engines:
            # the first configuration's audiences: every later one must end with the same
            reference: dict[str, Audience] | None = None
            for workers in options.workers:
                found = bench_one(
                    size, engine, options, contact=contact, workers=workers, reference=reference
                )
                contact, reference = found.contact, reference or found.audiences
                figures.update(found.figures)
                # per size and engine: sizes measured at other times keep their own
                prefix = key_prefix(engine, size, workers, options.destination)
                figures[f"{prefix}crmsync_source"] = source
                figures[f"{prefix}latency_s"] = options.latency
                figures[f"{prefix}connections"] = options.connections
                if options.destination != "mailchimp":
                    figures[f"{prefix}vendor_limits"] = LIMITS[options.destination]
                if workers:
                    figures[f"{prefix}workers"] = workers
                    figures[f"{prefix}broker"] = options.broker
                figures[f"{prefix}measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                figures[f"{prefix}python_speed_s"] = speed
                configs.append((engine, size, workers))
            throughput(figures, engine, size, list(options.workers), options.destination)
    path = save(figures)
    print(table(figures, configs, options.destination))
    print(f"  -> {path}")
    return 0
