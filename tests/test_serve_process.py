"""``crmsync serve`` as a real process: SIGTERM during a push stops the run after the
batch in flight (recorded interrupted, nothing lost) and the next start resumes; SIGHUP
with a broken configuration keeps the running one; two ``serve`` processes on one
PostgreSQL state database never run the pipeline at the same time."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

from tests.e2e import Site, make_site

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


class Served:
    def __init__(self, site: Site, log: Path) -> None:
        self.log_path = log
        self._log: IO[str] = open(log, "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from cli import main; main()",
                "serve",
                "--config",
                str(site.config),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=ROOT,
        )

    def signal(self, number: int) -> None:
        os.kill(self.process.pid, number)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._log.close()
        return code

    def lines(self) -> list[dict[str, object]]:
        text = self.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def messages(self) -> list[str]:
        return [str(line["message"]) for line in self.lines()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[[Site], Served]]:
    started: list[Served] = []

    def start(site: Site) -> Served:
        one = Served(site, tmp_path / f"serve{len(started)}.log")
        started.append(one)
        return one

    yield start
    for one in started:
        if one.process.poll() is None:
            one.process.kill()
            one.process.wait(30)


def _every(site: Site, interval: str) -> None:
    text = site.config.read_text(encoding="utf-8")
    text = text.replace(
        'destinations = ["out"]\n', f'destinations = ["out"]\nevery = "{interval}"\n'
    )
    # no health endpoints: two processes on one host would want the same port
    site.config.write_text(f"{text}\n[observe]\nport = 0\n", encoding="utf-8")


def _query(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    except sa.exc.DBAPIError:
        return []  # not created yet
    finally:
        engine.dispose()


def _until(what: Callable[[], bool], why: str, served: Served, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert served.process.poll() is None, f"serve ended: {served.messages()[-5:]}"
        assert time.monotonic() < deadline, f"{why}: {served.messages()[-5:]}"
        time.sleep(0.02)


def test_sigterm_during_a_push_loses_nothing_and_the_next_start_resumes(
    tmp_path: Path, served: Callable[[Site], Served]
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=2500, batch_size=10)
    _every(site, "1s")
    first = served(site)
    acked = "SELECT count(*) FROM ledger WHERE run_id = 1"
    _until(lambda: (_query(url, acked) or [(0,)])[0][0] >= 40, "run 1 pushed nothing", first)
    first.signal(signal.SIGTERM)
    assert first.stop() == 0, first.messages()[-5:]

    runs = _query(url, "SELECT id, status, error FROM runs ORDER BY id")
    assert runs == [(1, "interrupted", "stopped by SIGTERM")]
    assert _query(url, "SELECT name FROM leases") == []  # released
    (kept,) = _query(url, acked)[0]
    assert 40 <= int(kept) < 2000  # stopped after the batch in flight, not at the end

    again = served(site)
    done = "SELECT count(*) FROM runs WHERE status = 'succeeded'"
    _until(lambda: (_query(url, done) or [(0,)])[0][0] >= 1, "no run succeeded", again)
    assert again.stop() == 0

    pairs = site.record_hashes()
    assert len(pairs) == len(set(pairs))  # nobody sent twice with the same payload
    people = {key for key, _ in pairs}
    (ledger,) = _query(url, "SELECT count(*) FROM ledger")[0]
    assert len(people) == ledger > 2000
    rerun = site.cli("run", "--json")  # now, as serve ran: everything is there already
    assert json.loads(rerun.stdout)[0]["destinations"]["out"].get("ok", 0) == 0


def test_sighup_with_a_broken_configuration_keeps_the_running_one(
    tmp_path: Path, served: Callable[[Site], Served]
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    site = make_site(tmp_path, url, customers=30)
    _every(site, "1s")
    one = served(site)
    count = "SELECT count(*) FROM runs WHERE status = 'succeeded'"
    _until(lambda: (_query(url, count) or [(0,)])[0][0] >= 1, "no first run", one)
    good = site.config.read_text(encoding="utf-8")
    site.config.write_text(good + "\n[pipelines.main.typo]\nx = 1\n", encoding="utf-8")
    one.signal(signal.SIGHUP)
    _until(lambda: any("does not load" in m for m in one.messages()), "no refusal", one)
    (before,) = _query(url, count)[0]
    _until(lambda: _query(url, count)[0][0] >= int(before) + 2, "runs stopped", one)
    assert one.stop() == 0
    refusal = next(m for m in one.messages() if "does not load" in m)
    assert "previous configuration stays" in refusal and "typo" in refusal
    assert any(m == "stopped" for m in one.messages())


@pytest.mark.postgres
def test_two_serve_processes_never_run_the_pipeline_at_once(
    tmp_path: Path, postgres_url: str, served: Callable[[Site], Served]
) -> None:
    site = make_site(tmp_path, postgres_url, customers=400, batch_size=20)
    _every(site, "1s")
    assert site.cli("migrate").exit_code == 0  # two first starts would both create tables
    first = served(site)
    _until(lambda: any(m.startswith("serving") for m in first.messages()), "no start", first)
    second = served(site)
    count = "SELECT count(*) FROM runs WHERE status = 'succeeded'"
    _until(lambda: (_query(postgres_url, count) or [(0,)])[0][0] >= 5, "too few runs", first)
    assert second.process.poll() is None
    assert first.stop() == 0 and second.stop() == 0
    runs = _query(postgres_url, "SELECT started_at, finished_at, status FROM runs ORDER BY id")
    spans = sorted((int(a), int(b)) for a, b, _ in runs)  # type: ignore[call-overload]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two runs of the pipeline overlapped"
    starts = [m for s in (first, second) for m in s.messages() if m.startswith("run of main")]
    assert starts  # both tried; the lease or the tick decided who ran
