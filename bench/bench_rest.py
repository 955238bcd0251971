"""REST source throughput against a plain httpx loop making the same requests, same run.

Three pairs, each measured alternately (best of ``--repeat``) against the fake WooCommerce
store on 127.0.0.1, so a busy machine hurts both sides alike:

- fetch: the source's pages (HTTP seam, rate budget, retry policy, pagination, decoding)
  against ``httpx.Client.get`` + ``orjson.loads`` in a loop. This is the seam's overhead.
- full: the source's ``read`` (all of the above plus mapping and normalisation) against the
  plain loop calling the same compiled mapper on each record. This is the framework's.
- raw: the source's ``read`` against the plain loop that only decodes: how much of a pull is
  normalising records (e-mail and phone validation dominate), reported for honesty.

    .venv/bin/python -m bench.bench_rest [--customers N] [--page-size N] [--repeat N]
                                         [--fetch-repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.results import record
from connectors.records.fields import clear_caches
from connectors.rest import RestSource
from crmsync.contract import ConnectorContext
from crmsync.records import Stream

TARGET = 0.8


def _fake() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.fakes import platform

    return platform


def plain_loop(
    base_url: str, auth: tuple[str, str], page_size: int, work: Callable[[Stream, Any], None]
) -> int:
    """What a hand-written client would do: page until a short page, decode, hand over."""
    count = 0
    with httpx.Client(base_url=base_url, auth=auth, timeout=30.0) as client:
        for stream in (Stream.CUSTOMERS, Stream.ORDERS):
            page = 1
            while True:
                response = client.get(
                    f"/wp-json/wc/v3/{stream}",
                    params={
                        "orderby": "id",
                        "order": "asc",
                        "dates_are_gmt": "true",
                        "per_page": page_size,
                        "page": page,
                    },
                )
                response.raise_for_status()
                rows = orjson.loads(response.content)
                for row in rows:
                    work(stream, row)
                count += len(rows)
                if len(rows) < page_size:
                    break
                page += 1
    return count


def timed(run: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = run()
    return count, time.perf_counter() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_rest")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the mapped pair")
    parser.add_argument("--fetch-repeat", type=int, default=9, help="rounds of the fetch pair")
    args = parser.parse_args(argv)
    platform = _fake()
    store = platform.FakeWooCommerce(
        customers=args.customers, orders_per_customer=1.0, max_per_page=args.page_size
    )
    until = datetime(2100, 1, 1, tzinfo=UTC)
    with platform.serve_woocommerce(store):
        auth = (store.consumer_key, store.consumer_secret)
        source = RestSource(
            {
                "kind": "rest",
                "preset": "woocommerce",
                "base_url": store.base_url,
                "auth": {"username": auth[0], "password": auth[1]},
                "streams": {
                    "customers": {"page_size": args.page_size},
                    "orders": {"page_size": args.page_size},
                },
            },
            ConnectorContext("bench", Path(".")),
        )
        mappers = {stream: source.mapper(stream) for stream in source.streams()}

        def mapped(stream: Stream, row: Any) -> None:
            mapper = mappers[stream]
            mapper.build(row, [], mapper.updated_at(row))

        runs: dict[str, Callable[[], int]] = {
            "plain_fetch": lambda: plain_loop(store.base_url, auth, args.page_size, _nothing),
            "source_fetch": lambda: sum(
                len(page) for stream in source.streams() for page in source.raw_pages(stream)
            ),
            "plain_mapped": lambda: plain_loop(store.base_url, auth, args.page_size, mapped),
            "source_read": lambda: sum(
                1 for stream in source.streams() for _ in source.read(stream, None, until)
            ),
        }
        runs["plain_fetch"]()  # warm-up: connections, caches, imports
        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        rounds = max(args.repeat, args.fetch_repeat)
        for round_number in range(rounds):
            for name, run in runs.items():
                mapped_pair = name in ("plain_mapped", "source_read")
                if round_number >= (args.repeat if mapped_pair else args.fetch_repeat):
                    continue
                clear_caches()  # each mapped run validates every e-mail and phone afresh
                count, seconds = timed(run)
                counts[name] = count
                best[name] = min(best.get(name, float("inf")), seconds)
        source.close()
    if len(set(counts.values())) != 1:
        print(f"record counts differ between runs: {counts}", file=sys.stderr)
        return 1
    records = counts["plain_fetch"]
    rate = {name: records / seconds for name, seconds in best.items()}
    figures: dict[str, float | int | str] = {
        "records": records,
        "page_size": args.page_size,
        "plain_fetch_rps": round(rate["plain_fetch"]),
        "source_fetch_rps": round(rate["source_fetch"]),
        "fetch_ratio": round(rate["source_fetch"] / rate["plain_fetch"], 3),
        "plain_mapped_rps": round(rate["plain_mapped"]),
        "source_read_rps": round(rate["source_read"]),
        "full_ratio": round(rate["source_read"] / rate["plain_mapped"], 3),
        "raw_ratio": round(rate["source_read"] / rate["plain_fetch"], 3),
        "target_ratio": TARGET,
    }
    path = record("rest_source", figures)
    for key, value in figures.items():
        print(f"{key:>18}: {value}")
    print(f"written to {path}")
    return 0


def _nothing(stream: Stream, row: Any) -> None:
    return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
