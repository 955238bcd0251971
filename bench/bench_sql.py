"""SQL source throughput against a plain SQLAlchemy loop over the same query, same run.

A Turkish shop database (``tests/sql_shop.py``, lines in a table of their own) with about
100,000 orders is written into a schema of its own on the PostgreSQL server, then each
pair is measured alternately (best of ``--repeat``), so a busy machine hurts both alike:

- fetch: the source's raw pages (keyset pages in read-only transactions, each page of
  orders joined to its lines in the same statement, rows as dicts with their lines
  attached) against one streamed ``SELECT`` (server-side cursor, ``yield_per``) of the
  same rows in the same order, joined to their lines, grouped into the same dicts: the
  cost of paging, which buys a pull that holds no snapshot open and resumes anywhere.
- full: the source's ``read`` (all of the above plus mapping) against the plain loop
  handing each dict to the same compiled mapping. The framework's cost end to end.

Customers (no lines) and orders (with lines) are measured separately.

    .venv/bin/python -m bench.bench_sql [--customers N] [--page-size N] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.databases import POSTGRES_URL
from bench.results import record
from connectors.records.fields import clear_caches
from connectors.sql import SqlSource
from crmsync.contract import ConnectorContext
from crmsync.records import Stream
from crmsync.sample import SampleSpec, iter_store

TARGET = 0.8
FOREVER = datetime(2100, 1, 1, tzinfo=UTC)
Row = dict[str, Any]


def _shop() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests import sql_shop

    return sql_shop


def plain_customers(engine: sa.Engine, schema: str, columns: list[str]) -> Iterator[Row]:
    """What a hand-written reader does: one streamed query, rows as dicts."""
    listed = ", ".join(columns)
    query = sa.text(
        f'SELECT {listed} FROM "{schema}".musteriler '
        "WHERE guncelleme_zamani IS NOT NULL ORDER BY guncelleme_zamani, musteri_no"
    )
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(query)
        names = list(result.keys())
        for row in result:
            yield dict(zip(names, row, strict=True))


def plain_orders(
    engine: sa.Engine, schema: str, columns: list[str], line_columns: list[str]
) -> Iterator[Row]:
    """One streamed join of orders and their lines, grouped into one dict per order."""
    listed = ", ".join(f"o.{c}" for c in columns)
    lined = ", ".join(f"l.{c} AS l_{c}" for c in line_columns)
    query = sa.text(
        f'SELECT {listed}, {lined} FROM "{schema}".siparisler o '
        f'LEFT JOIN "{schema}".siparis_kalemleri l ON l.siparis_no = o.siparis_no '
        "ORDER BY o.degisim_ms, o.siparis_no, l.sira"
    )
    width = len(columns)
    key = columns.index("siparis_no")
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(query)
        current: Row | None = None
        for row in result:
            if current is None or current["siparis_no"] != row[key]:
                if current is not None:
                    yield current
                current = dict(zip(columns, row[:width], strict=True))
                current["@lines"] = []
            if row[width] is not None:
                current["@lines"].append(dict(zip(line_columns, row[width:], strict=True)))
        if current is not None:
            yield current


def timed(run: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = run()
    return count, time.perf_counter() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_sql")
    parser.add_argument("--customers", type=int, default=20_000, help="x5 orders each")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    shop = _shop()
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.orig}", file=sys.stderr)
        return 1
    schema = f"bench_sql_{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        tables = shop.create_shop(engine, schema)
        spec = SampleSpec(customers=args.customers, orders_per_customer=5.0, seed=3)
        written = shop.write_store(engine, tables, iter_store(spec), batch=20_000)
        with engine.begin() as conn:
            conn.execute(sa.text(f'ANALYZE "{schema}".siparisler, "{schema}".siparis_kalemleri'))
        print(f"seeded {written} in {time.perf_counter() - started:.1f}s", flush=True)
        config = shop.shop_config(POSTGRES_URL, schema, page_size=args.page_size)
        source = SqlSource(config, ConnectorContext("bench", Path(".")))
        figures = measure(source, engine, schema, args.repeat)
        source.close()
    finally:
        shop.drop_shop(engine, schema)
        engine.dispose()
    figures = {
        "orders": written["siparisler"],
        "order_lines": written["siparis_kalemleri"],
        "customers": written["musteriler"],
        "page_size": args.page_size,
        **figures,
        "target_ratio": TARGET,
    }
    path = record("sql_source", figures)
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    print(f"written to {path}")
    return 0


def measure(source: SqlSource, engine: sa.Engine, schema: str, repeat: int) -> dict[str, Any]:
    customers, orders = Stream.CUSTOMERS, Stream.ORDERS
    columns = {s: list(source.plan(s).pages.columns) for s in (customers, orders)}
    children = source.plan(orders).pages.children
    assert children is not None
    line_columns = list(children.columns)
    builders = {s: source.builder(s) for s in (customers, orders)}

    def plain(stream: Stream) -> Iterator[Row]:
        if stream is customers:
            return plain_customers(engine, schema, columns[customers])
        return plain_orders(engine, schema, columns[orders], line_columns)

    def plain_fetch(stream: Stream) -> int:
        return sum(1 for _ in plain(stream))

    def source_fetch(stream: Stream) -> int:
        return sum(len(page) for page in source.raw_pages(stream, None, FOREVER))

    def plain_mapped(stream: Stream) -> int:
        build = builders[stream].outcome
        return sum(len(build(row)) for row in plain(stream))

    def source_read(stream: Stream) -> int:
        return sum(1 for _ in source.read(stream, None, FOREVER))

    runs: dict[str, Callable[[], int]] = {}
    for stream in (customers, orders):
        for kind in (plain_fetch, source_fetch, plain_mapped, source_read):
            runs[f"{stream.value}_{kind.__name__}"] = partial(kind, stream)
    for warm_up in runs.values():  # connections, plans, caches
        warm_up()
    best: dict[str, float] = {}
    counts: dict[str, int] = {}
    for round_number in range(repeat):
        ordered = list(runs.items())
        if round_number % 2:  # alternate the order, so that drift in load hurts both alike
            ordered.reverse()
        for name, measured in ordered:
            clear_caches()  # each mapped run validates every e-mail and phone afresh
            counts[name], seconds = timed(measured)
            best[name] = min(best.get(name, float("inf")), seconds)
    figures: dict[str, Any] = {}
    for stream in (customers, orders):
        name = stream.value
        total = {counts[f"{name}_{kind}"] for kind in ("plain_fetch", "source_fetch")}
        if len(total) != 1:
            raise SystemExit(f"{name}: row counts differ between the pair: {counts}")
        rows = counts[f"{name}_plain_fetch"]
        rate = {kind: rows / best[f"{name}_{kind}"] for kind in
                ("plain_fetch", "source_fetch", "plain_mapped", "source_read")}  # fmt: skip
        figures |= {
            f"{name}_plain_fetch_rps": round(rate["plain_fetch"]),
            f"{name}_source_fetch_rps": round(rate["source_fetch"]),
            f"{name}_fetch_ratio": round(rate["source_fetch"] / rate["plain_fetch"], 3),
            f"{name}_plain_mapped_rps": round(rate["plain_mapped"]),
            f"{name}_source_read_rps": round(rate["source_read"]),
            f"{name}_full_ratio": round(rate["source_read"] / rate["plain_mapped"], 3),
        }
    return figures


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
