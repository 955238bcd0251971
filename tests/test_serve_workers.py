"""``crmsync serve --workers celery``: the service keeps the schedules, leases, reports
and alerts of a directory of stores while the runs' work goes to Celery workers (real
Redis, PostgreSQL state). Each store's scheduled runs end as runs in one process would:
everyone sent, nobody twice, and a further run finds nothing to do. A configuration
that cannot run on workers is refused before any schedule starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli import main
from connectors.outbox import read_outbox
from tests.celery_workers import ROOT, broker_or_skip, celery_table, new_queue, workers
from tests.stores_dir import make_stores_dir

STORES = {"acme": 1, "globex": 2}  # store -> the seed of its export files


def test_serving_on_workers_without_a_shared_database_is_refused_before_it_starts(
    tmp_path: Path,
) -> None:
    site = make_stores_dir(tmp_path, f"sqlite:///{tmp_path / 'state.db'}")
    site.add("acme")
    result = CliRunner().invoke(
        main, ["serve", "--config", str(site.directory), "--workers", "celery"]
    )
    assert result.exit_code == 2, result.output
    assert "state.url" in result.output or "celery.broker_url" in result.output
    assert not (tmp_path / "state.db").exists()  # no schedule started, nothing created


@pytest.mark.slow
@pytest.mark.postgres
def test_scheduled_runs_of_every_store_go_to_the_workers_and_end_complete(
    tmp_path: Path, postgres_url: str
) -> None:
    broker = broker_or_skip("redis")
    queue = new_queue()
    extra = celery_table(broker, queue) + "\n[observe]\nport = 0\n"
    site = make_stores_dir(tmp_path, postgres_url, extra)
    base = site.directory / "_base.toml"
    schedule = base.read_text(encoding="utf-8").replace('schedule = "*/5 * * * *"', 'every = "2s"')
    base.write_text(schedule, encoding="utf-8")
    for name, seed in STORES.items():
        site.add(name, customers=60, seed=seed)

    with workers(site.directory, tmp_path / "logs", broker, queue, count=1) as running:
        serve = _serve(site.directory, tmp_path / "serve.log")
        try:
            # two runs of each store: the first sends everyone, the second nobody
            _until(lambda: _each_ran_twice(postgres_url), serve)
        finally:
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(60)
        log = running.log_text()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]

    for name in STORES:
        sent = site.sent(name)
        assert site.emails(name) <= sent  # every customer, and the guests of their orders
        assert site.memberships(name)  # the segments went too
        # each person written once: the second run found nothing to send
        assert len(read_outbox(site.outbox / f"{name}.out")) == len(sent)
    # the tasks ran in the worker, for both stores; the service process pushed nothing
    assert "crmsync.push" in log and "crmsync.plan" in log
    assert "acme" in log and "globex" in log
    statuses = _query(postgres_url, "SELECT DISTINCT status FROM runs")
    assert statuses <= {("succeeded",), ("interrupted",)}  # SIGTERM may stop a third run
    for name in STORES:  # and every one of them acknowledged in the ledger
        assert len(site.sent(name)) == _count(postgres_url, f"{name}.out")


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as handle:
        command = [sys.executable, "-c", "from cli import main; main()", "serve"]
        command += ["--config", str(config), "--workers", "celery", "--log-format", "json"]
        return subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=handle, env=dict(os.environ)
        )


def _each_ran_twice(url: str) -> bool:
    rows = _query(url, "SELECT pipeline, count(*) FROM runs WHERE status = 'succeeded' GROUP BY 1")
    succeeded = {str(p): int(str(n)) for p, n in rows}
    return all(succeeded.get(f"{name}.main", 0) >= 2 for name in STORES)


def _count(url: str, destination: str) -> int:
    rows = _query(url, f"SELECT count(*) FROM ledger WHERE destination = '{destination}'")
    return int(str(next(iter(rows))[0])) if rows else 0


def _query(url: str, sql: str) -> set[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {tuple(r) for r in conn.execute(sa.text(sql))}
    except sa.exc.DBAPIError:
        return set()  # the tables are not created yet
    finally:
        engine.dispose()


def _until(done: Callable[[], bool], serve: subprocess.Popen[bytes], seconds: float = 150) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert serve.poll() is None, "serve ended early"
        assert time.monotonic() < deadline, "the stores' runs did not all end in time"
        time.sleep(0.5)
