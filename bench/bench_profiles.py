"""Profile build + segments + mapping + diff, at 100k and 1M generated customers and on CDNOW.

    python -m bench.bench_profiles [--sizes 100000,1000000] [--cdnow PATH]
                                   [--postgres URL [--postgres-sizes 100000]]

Staging is filled once per size and reused across runs: SQLite files under
bench/.cache, and, when PostgreSQL is reachable at --postgres or
CRMSYNC_BENCH_POSTGRES_URL (default: the tests' database), a schema
crmsync_bench_<size> there. The measured phase runs in a fresh process so its peak RSS
is its own: a dry run (`plan` without pulling) that builds every profile, evaluates the
default segments, applies the outbox mapping and diffs against the (empty) ledger.
Targets: >= 20,000 profiles/s and <= 500 MB peak RSS at 1M customers (SQLite).

The run plans in worker processes (``pipelines.<name>.workers``, default 2), so peak RSS
is the peak of the *sum* over the measuring process and its workers, sampled from /proc
every 50 ms (a process's own peak would see one process only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.results import record

CACHE = Path(__file__).parent / ".cache"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # as the tests use
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SHARED = Path(os.environ.get("CRMSYNC_SHARED") or Path(__file__).resolve().parents[2] / "shared")
CDNOW = SHARED / "datasets" / "cdnow" / "CDNOW_master.txt"


def _stage(url: str, records: Any, batch: int = 5000) -> tuple[int, float]:
    from crmsync.records import Cart, Customer, Order, Stream
    from state.store import Store

    store = Store(url)
    pending: dict[Stream, list[Any]] = defaultdict(list)
    kinds = {Customer: Stream.CUSTOMERS, Order: Stream.ORDERS, Cart: Stream.CARTS}
    count, staging = 0, 0.0  # time in store.stage only, not in generating the records

    def stage(stream: Stream, items: list[Any]) -> None:
        nonlocal staging
        started = time.perf_counter()
        store.stage("bench", stream, items)
        staging += time.perf_counter() - started

    for item in records:
        stream = kinds[type(item)]
        pending[stream].append(item)
        count += 1
        if len(pending[stream]) >= batch:
            stage(stream, pending.pop(stream))
    for stream, items in pending.items():
        stage(stream, items)
    store.close()
    return count, staging


def generated_records(customers: int) -> Any:
    """The bench's generated store: the same records for SQLite and PostgreSQL."""
    from crmsync.sample import SampleSpec, iter_store

    return iter_store(SampleSpec(customers=customers, seed=11, now=NOW))


def _staged(count: int, seconds: float) -> dict[str, int]:
    print(f"  staged {count:,} records in {seconds:.0f} s ({count / seconds:,.0f}/s)")
    return {"staged_records": count, "staged_per_s": round(count / seconds)}


def prepare_generated(customers: int) -> Path:
    path = CACHE / f"generated-{customers}.db"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        count, seconds = _stage(f"sqlite:///{partial}", generated_records(customers))
        _staging_note(path).write_text(json.dumps(_staged(count, seconds)))
        partial.rename(path)
    return path


def _staging_note(db: Path) -> Path:
    """Where the staging figures of a cached store are kept (staging runs only once)."""
    return db.with_suffix(".staging.json")


def staging_figures(db: Path) -> dict[str, Any]:
    note = _staging_note(db)
    return dict(json.loads(note.read_text())) if note.exists() else {}


def prepare_postgres(server_url: str, customers: int) -> tuple[str, dict[str, Any]]:
    """The generated store staged in its own schema of ``server_url`` (once: kept across
    runs like the SQLite files); returns a state URL for it and its staging figures."""
    import sqlalchemy as sa

    schema = f"crmsync_bench_{customers}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            note = conn.execute(
                sa.text(
                    "select obj_description(oid, 'pg_namespace') from pg_namespace"
                    " where nspname = :name"
                ),
                {"name": schema},
            ).scalar()
            if not note:  # never staged, or interrupted: the comment is set once complete
                conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
                conn.execute(sa.text(f'create schema "{schema}"'))
                records = generated_records(customers)
                count, seconds = _stage(_in_schema(server_url, schema), records)
                note = json.dumps(_staged(count, seconds))
                conn.execute(sa.text(f"comment on schema \"{schema}\" is '{note}'"))
    finally:
        admin.dispose()
    return _in_schema(server_url, schema), dict(json.loads(note))


def _reachable(server_url: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(server_url)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL not reachable at {server_url}, skipped: {str(exc).splitlines()[0]}")
        return False
    finally:
        engine.dispose()


def _in_schema(server_url: str, schema: str) -> str:
    separator = "&" if "?" in server_url else "?"
    return f"{server_url}{separator}options=-csearch_path%3D{schema}"


def cdnow_records(path: Path) -> Any:
    """CDNOW transactions as canonical records (e-mails under example.com, USD)."""
    from crmsync.records import Consent, ConsentState, Customer, Order, OrderLine, OrderStatus

    seen: set[str] = set()
    with open(path, encoding="ascii") as handle:
        next(handle)
        for line_no, line in enumerate(handle, start=2):
            cid, day, cds, value = line.split()
            placed = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC) + timedelta(hours=12)
            if cid not in seen:
                seen.add(cid)
                yield Customer(
                    external_id=cid,
                    email=f"cust-{cid}@example.com",
                    created_at=placed,
                    updated_at=placed,
                    email_consent=Consent(ConsentState.SUBSCRIBED, placed),
                )
            amount = Decimal(value)
            yield Order(
                external_id=f"{cid}-{day}-{line_no}",
                customer_external_id=cid,
                email=None,
                placed_at=placed,
                status=OrderStatus.FULFILLED,
                currency="USD",
                total=amount,
                updated_at=placed,
                lines=(
                    OrderLine("CD", "CD", "Music", max(int(cds), 1), amount / max(int(cds), 1)),
                ),
            )


def prepare_cdnow(path: Path) -> Path:
    db = CACHE / "cdnow.db"
    if not db.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = db.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        count, seconds = _stage(f"sqlite:///{partial}", cdnow_records(path))
        print(f"  staged {count:,} CDNOW records in {seconds:.1f} s")
        partial.rename(db)
    return db


class TreeMemory:
    """Samples the resident memory of this process and all its descendants."""

    def __init__(self, every: float = 0.05) -> None:
        self.every, self.peak_kb, self.most_children = every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        pids = _tree(os.getpid())
        self.most_children = max(self.most_children, len(pids) - 1)
        self.peak_kb = max(self.peak_kb, sum(_rss_kb(pid) for pid in pids))


def _tree(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def _rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def _status_kb(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status. The process's own peak is read as VmHWM, not
    ``ru_maxrss``: Linux carries ``ru_maxrss`` over an exec, so a child started by a
    parent that staged a store would report the parent's peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(state_url: str, currency: str, as_of: datetime) -> dict[str, Any]:
    """Runs in a child process: one dry run over the staged store."""
    from connectors.outbox import OutboxConfig, OutboxDestination
    from crmsync.config import (
        ConnectorSpec,
        DestinationSpec,
        PipelineSettings,
        PipelineSpec,
        Settings,
        make_config,
    )
    from crmsync.fields import catalogue
    from crmsync.registry import default_mapping
    from crmsync.segments import DEFAULT_SEGMENTS, SegmentSet
    from engine.pipeline import RunOptions, run_pipeline
    from mappings import load_mapping
    from state.store import Store

    fields = catalogue()
    mapping = load_mapping(default_mapping("outbox"), fields)
    destination = DestinationSpec(
        "bench_outbox",
        "outbox",
        OutboxDestination,
        OutboxConfig(directory=str(CACHE / "outbox")),
        mapping,
    )
    settings = PipelineSettings(sources=["bench"], destinations=["bench_outbox"])
    spec = PipelineSpec(
        "bench",
        settings,
        currency,
        (ConnectorSpec("bench", "files", None, None),),
        (destination,),
        SegmentSet.compile(DEFAULT_SEGMENTS, fields),
        fields,
    )
    config = make_config(
        Settings(), CACHE / "bench.toml", {}, {"bench_outbox": destination}, {"bench": spec}
    )
    store = Store(state_url)
    options = RunOptions(dry_run=True, pull=False, as_of=as_of)
    with TreeMemory() as memory:
        started = time.perf_counter()
        report = run_pipeline(config, spec, store, options)
        seconds = time.perf_counter() - started
    store.close()
    own_mb = _status_kb(os.getpid(), "VmHWM:") / 1024
    return {
        "profiles": report.profiles,
        "seconds": round(seconds, 2),
        "profiles_per_s": round(report.profiles / seconds),
        "peak_rss_mb": round(max(memory.peak_kb / 1024, own_mb), 1),
        "peak_rss_mb_main_process": round(own_mb, 1),
        "child_processes": memory.most_children,  # workers and the resource tracker
        "changes": sum(d.counts.get("create", 0) for d in report.destinations.values()),
    }


def _child(state_url: str, currency: str, as_of: datetime) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_profiles",
            "--measure",
            state_url,
            "--currency",
            currency,
            "--as-of",
            as_of.isoformat(),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.bench_profiles")
    parser.add_argument("--sizes", default=os.environ.get("CRMSYNC_BENCH_SIZES", "100000"))
    parser.add_argument("--cdnow", default=str(CDNOW))
    parser.add_argument("--measure", help="(internal) the state URL to measure")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CRMSYNC_BENCH_POSTGRES_URL",
            os.environ.get("CRMSYNC_TEST_POSTGRES_URL", LOCAL_POSTGRES),
        ),
        help="also measure the generated stores on this PostgreSQL database ('' for none)",
    )
    parser.add_argument(
        "--postgres-sizes", default=os.environ.get("CRMSYNC_BENCH_POSTGRES_SIZES", "100000")
    )
    parser.add_argument("--currency", default="TRY")
    parser.add_argument("--as-of")
    args = parser.parse_args(argv)
    if args.measure:
        as_of = datetime.fromisoformat(args.as_of)
        print(json.dumps(measure(args.measure, args.currency, as_of)))
        return 0
    figures: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",") if s):
        print(f"generated store, {size:,} customers")
        db = prepare_generated(size)
        result = {**_child(f"sqlite:///{db}", "TRY", NOW), **staging_figures(db)}
        print(f"  {result}")
        figures.update({f"{k}@{size}": v for k, v in result.items()})
    postgres = args.postgres if args.postgres and _reachable(args.postgres) else ""
    for size in (int(s) for s in args.postgres_sizes.split(",") if s and postgres):
        print(f"generated store, {size:,} customers, on PostgreSQL")
        url, staged = prepare_postgres(postgres, size)
        result = {**_child(url, "TRY", NOW), **staged}
        print(f"  {result}")
        figures.update({f"{k}@{size}-postgresql": v for k, v in result.items()})
    if Path(args.cdnow).exists():
        print("CDNOW")
        result = _child(
            "sqlite:///" + str(prepare_cdnow(Path(args.cdnow))),
            "USD",
            datetime.combine(date(1998, 7, 1), datetime.min.time(), UTC),
        )
        print(f"  {result}")
        figures.update({f"{k}@cdnow": v for k, v in result.items()})
    figures["target_profiles_per_s"] = 20000
    figures["target_peak_rss_mb_at_1m"] = 500
    print(f"written to {record('profiles', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
