"""``python -m bench.stores``: the stores served in this process and on N workers, each
measured on a fresh state database and fake, saved and printed."""

from __future__ import annotations

import argparse
import os
import subprocess
import uuid
from pathlib import Path

from bench.bench_mailchimp import sync_floor
from bench.e2e.config import state_database
from bench.e2e.fake import SYNC_CALLS, call_name
from bench.e2e.options import ROOT
from bench.e2e.workers import celery_text
from bench.results import Figure, record
from bench.stores.layout import KEY_ENV, Shape, accounts, exports, write_directory
from bench.stores.serving import command, running, watch

WORK = ROOT / "var" / "bench" / "serve"
BROKER = os.environ.get("CRMSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BUDGETS = "redis://127.0.0.1:6379/3"  # the accounts' shared budgets, apart from the broker
PEOPLE_PER_SLICE = 25_000  # the default: a small store is one slice


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stores")
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--customers", type=int, default=200, help="per store")
    parser.add_argument("--workers", default="0,2", help="0: serve alone; N: N Celery workers")
    parser.add_argument("--latency", type=float, default=0.08, help="seconds per API call")
    parser.add_argument("--max-parallel", type=int, default=8, help="[serve] max_parallel")
    parser.add_argument("--broker", default=BROKER)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    shape = Shape(args.stores, args.customers)
    data = exports(shape)
    figures: dict[str, Figure] = {
        "stores": shape.stores,
        "customers_per_store": shape.customers,
        "latency_s": args.latency,
        "max_parallel": args.max_parallel,
    }
    for workers in [int(w) for w in args.workers.split(",") if w]:
        found = measure(shape, data, workers, args)
        figures.update({f"w{workers}.{k}": v for k, v in found.items()})
        print(f"  {workers} worker(s): " + ", ".join(f"{k} {v}" for k, v in found.items()))
    for workers in [int(w) for w in args.workers.split(",") if w]:
        one = figures.get("w1.first.wall_s")
        mine = figures.get(f"w{workers}.first.wall_s")
        if workers > 1 and isinstance(one, float) and isinstance(mine, float) and mine:
            figures[f"w{workers}.throughput_over_w1"] = round(one / mine, 3)
    print(f"  -> {record('stores', figures)}")
    return 0


def measure(
    shape: Shape, data: dict[str, Path], workers: int, args: argparse.Namespace
) -> dict[str, Figure]:
    """Every store's first sync and no-change run through ``serve`` (on ``workers``)."""
    from tests.fakes.mailchimp import FakeMailchimp

    names = sorted(data)
    connections = 10 * max(1, args.max_parallel)  # 10 per account, the accounts together
    fake = FakeMailchimp(validate=False, latency=args.latency, max_connections=connections)
    keys = accounts(fake, names)
    fake.start()
    folder = args.work / f"w{workers}"
    env = {**os.environ, **{KEY_ENV.format(n): k for n, k in keys.items()}}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    database = f"bench_stores_{workers}_{os.getpid()}"
    try:
        with state_database("postgresql", folder, database) as url:
            celery = _celery(args.broker, workers)
            directory = folder / "stores"
            write_directory(
                directory, url, data, fake.base_url, max_parallel=args.max_parallel, celery=celery
            )
            subprocess.run(command("migrate", "--config", str(directory)), env=env, check=True)
            with running(directory, folder / "logs", env, workers) as processes:
                waves, cpu_first = watch(url, names, processes)
                cpu_total, rss = processes.cpu_seconds(), processes.peak_rss_mb()
    finally:
        fake.stop()
    first, again = waves
    calls = {call_name(m, r): n for (m, r), n in fake.calls.items()}
    sync = sum(n for name, n in calls.items() if name in SYNC_CALLS)
    floor = sum(_floor(fake, f"list{name}") for name in names)
    return {
        "first.wall_s": round(first.wall, 2),
        "first.longest_run_s": round(first.longest, 2),
        "first.profiles": first.profiles,
        "first.failed": first.failed,
        "first.cpu_s": round(cpu_first, 1),
        "first.cpu_ms_per_profile": round(1000 * cpu_first / max(1, first.profiles), 2),
        "no_change.wall_s": round(again.wall, 2),
        "no_change.longest_run_s": round(again.longest, 2),
        "no_change.failed": again.failed,
        "no_change.cpu_s": round(cpu_total - cpu_first, 1),
        "sync_calls": sync,
        "floor_calls": floor,
        "calls_over_floor": round(sync / max(1, floor), 4),
        "max_in_flight": fake.max_in_flight,
        "rejected_429": fake.concurrency_rejections,
        **{f"peak_rss_mb.{role}": round(mb, 1) for role, mb in _largest(rss).items()},
    }


def _celery(broker: str, workers: int) -> str:
    if not workers:
        return ""
    queue = f"bench-stores-{uuid.uuid4().hex[:8]}"
    return celery_text(broker, queue, PEOPLE_PER_SLICE, BUDGETS)


def _floor(fake: object, list_id: str) -> int:
    """The fewest sync calls from an empty audience to what ``list_id`` holds now."""
    from tests.fakes.mailchimp import FakeMailchimp

    assert isinstance(fake, FakeMailchimp)
    members = len(fake.lists[list_id].members)
    adds = {tag: len(emails) for tag, emails in fake.tag_members(list_id).items()}
    return sync_floor([members], adds, {}, ())


def _largest(rss: dict[str, float]) -> dict[str, float]:
    """serve's peak, and the largest worker's."""
    workers = [mb for role, mb in rss.items() if role != "serve"]
    found = {"serve": rss["serve"]}
    if workers:
        found["worker"] = max(workers)
    return found


__all__ = ["main"]
