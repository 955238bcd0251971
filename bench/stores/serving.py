"""One measurement: ``crmsync serve`` over the stores' directory (and N Celery workers),
watched through the state database's runs until every store ran twice, then stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.e2e.watch import cpu_ticks, process_tree, status_kb

POLL = 0.5  # seconds between looks at the runs
TIMEOUT = 1800.0  # seconds every store has to run twice


@dataclass
class Processes:
    """The processes of one measurement: ``serve`` and the workers, by role."""

    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        """CPU so far of every process of every tree (a worker's pool children too)."""
        pids = [pid for p in self.started.values() for pid, _ in process_tree(p.pid)]
        ticks = sum(cpu_ticks(pid) or 0 for pid in pids)
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> dict[str, float]:
        """Per role, the largest peak RSS of any process in its tree (MB)."""
        return {
            role: max(status_kb(pid, "VmHWM") for pid, _ in process_tree(p.pid)) / 1024
            for role, p in self.started.items()
        }


@dataclass(frozen=True)
class Wave:
    """The n-th run of every store: from the first start to the last end."""

    wall: float
    runs: int
    profiles: int
    failed: int
    longest: float


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


@contextmanager
def running(directory: Path, logs: Path, env: dict[str, str], workers: int) -> Iterator[Processes]:
    """``serve`` (on workers when ``workers``) and the workers, until the block ends: then
    SIGTERM to all, serve first (its runs stop after their batch), then the workers."""
    logs.mkdir(parents=True, exist_ok=True)
    found = Processes()
    with ExitStack() as stack:
        for number in range(workers):
            log = stack.enter_context(open(logs / f"worker-{number}.log", "wb"))
            args = command("worker", "--config", str(directory), "--pool", "solo")
            found.started[f"worker-{number}"] = subprocess.Popen(
                [*args, "--loglevel", "WARNING"], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        log = stack.enter_context(open(logs / "serve.log", "wb"))
        args = command("serve", "--config", str(directory), "--log-format", "json")
        args += ["--workers", "celery"] if workers else []
        found.started["serve"] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=log, env=env
        )
        try:
            yield found
        finally:
            for role in ["serve", *[r for r in found.started if r != "serve"]]:
                process = found.started[role]
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(120)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def watch(url: str, stores: list[str], processes: Processes) -> tuple[list[Wave], float]:
    """Waits until every store's pipeline ran twice; returns the two waves and the CPU
    every process had used when the last first run ended."""
    engine = sa.create_engine(url)
    deadline = time.monotonic() + TIMEOUT
    cpu_first: float | None = None
    try:
        while True:
            runs = _runs(engine)
            finished = {p: [r for r in rs if r[1] != "running"] for p, rs in runs.items()}
            done = [len(finished.get(f"{s}.main", [])) for s in stores]
            if cpu_first is None and min(done) >= 1:
                cpu_first = processes.cpu_seconds()
            if min(done) >= 2:
                break
            serve = processes.started["serve"]
            if serve.poll() is not None:
                raise RuntimeError(f"serve ended with {serve.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sum(d >= 2 for d in done)} stores ran twice in time")
            time.sleep(POLL)
    finally:
        engine.dispose()
    assert cpu_first is not None
    return [_wave(finished, stores, n) for n in (0, 1)], cpu_first


Run = tuple[int, str, int, int | None, str]  # id, status, started_at, finished_at, counts


def _runs(engine: sa.Engine) -> dict[str, list[Run]]:
    found: dict[str, list[Run]] = {}
    query = "SELECT pipeline, id, status, started_at, finished_at, counts FROM runs ORDER BY id"
    try:
        with engine.connect() as conn:
            for pipeline, *rest in conn.execute(sa.text(query)):
                found.setdefault(pipeline, []).append(tuple(rest))
    except sa.exc.DBAPIError:
        return {}  # not created yet
    return found


def _wave(finished: dict[str, list[Run]], stores: list[str], number: int) -> Wave:
    runs = [finished[f"{s}.main"][number] for s in stores]
    starts = [r[2] for r in runs]
    ends = [r[3] or r[2] for r in runs]
    profiles = sum(int(json.loads(r[4] or "{}").get("profiles") or 0) for r in runs)
    failed = sum(r[1] not in ("succeeded", "partial") for r in runs)
    longest = max(e - s for s, e in zip(starts, ends, strict=True)) / 1000
    return Wave((max(ends) - min(starts)) / 1000, len(runs), profiles, failed, longest)
