"""Events: derived and pushed per second, and calls per 10,000 orders against the floor.

Generates a sample store, runs its pipeline once with events on against the outbox
(people first, then events, as every run does) and reads the run's report: the events
stage's seconds, the events acknowledged, and the event batch files written (the
outbox's "calls"). The floor is one call per ``event_batch_size`` events: no client can
send them in fewer. A second run over the same data measures the cost of deriving and
filtering when nothing is new.

Against the outbox only: the Klaviyo and Mailchimp event pushes (E2, E3) were not in the
tree when this was written; their benches (bench_klaviyo, bench_mailchimp) measure their
vendors' calls.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from bench.results import record
from cli import main as cli
from crmsync.sample import SampleSpec, write_files

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
AS_OF = "2026-11-01T09:00:00+00:00"


def _config(root: Path, data: Path, batch: int) -> Path:
    config = root / "crmsync.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{root / "state.db"}"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{data / "customers.csv"}"
[sources.shop.orders]
path = "{data / "orders.jsonl"}"
[sources.shop.carts]
path = "{data / "carts.jsonl"}"

[destinations.out]
kind = "outbox"
directory = "{root / "outbox"}"
event_batch_size = {batch}

[pipelines.main]
sources = ["shop"]
destinations = ["out"]
events = true
""",
        encoding="utf-8",
    )
    return config


def _run(config: Path) -> dict[str, object]:
    result = CliRunner().invoke(
        cli, ["run", "--as-of", AS_OF, "--json", "--no-progress", "--config", str(config)]
    )
    reports: list[dict[str, object]] = json.loads(result.stdout)
    return reports[0]


def measure(customers: int, batch: int) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        root = Path(tmp)
        write_files(SampleSpec(customers=customers, seed=3, now=NOW), root / "data")
        text = (root / "data" / "orders.jsonl").read_text(encoding="utf-8")
        orders = sum(1 for line in text.splitlines() if line)
        config = _config(root, root / "data", batch)
        first = _run(config)
        files = len(list((root / "outbox" / "out" / "events").glob("*.jsonl")))
        second = _run(config)
    events = first["events"]["out"]["ok"]  # type: ignore[index]
    seconds = first["seconds"].get("events", 0.0)  # type: ignore[attr-defined]
    again = second["seconds"].get("events", 0.0)  # type: ignore[attr-defined]
    floor = math.ceil(events / batch)
    return {
        "destination": "outbox",
        "customers": customers,
        "orders": orders,
        "events": events,
        "events_per_s": round(events / seconds, 1) if seconds else "n/a",
        "events_stage_s": round(seconds, 3),
        "rerun_events_stage_s": round(again, 3),
        "calls": files,
        "floor_calls": floor,
        "calls_per_10k_orders": round(files * 10_000 / orders, 1) if orders else 0,
        "ratio_to_floor": round(files / floor, 4) if floor else "n/a",
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_events")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    args = parser.parse_args(argv)
    figures = measure(args.customers, args.batch)
    path = record("events", figures)
    print(json.dumps(figures, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
