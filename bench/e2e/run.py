"""One ``crmsync run`` as a subprocess, watched: its report, wall time, CPU and memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.e2e.store import as_of
from bench.e2e.watch import Watcher
from bench.e2e.workers import Usage

TIME = Path("/usr/bin/time")  # GNU time: the launcher whose child is crmsync
# A run is measured to its end: it waits for the vendor's import jobs however long they
# take (Klaviyo's first sync of 1,000,000 people settles through 10,000 look-ups at 750
# a minute), where crmsync's own wait (300 s) would leave them to the next run.
JOB_WAIT_S = 3 * 3600


@dataclass
class Run:
    """One ``crmsync run``: its report and what it cost; the calls are filled in after."""

    report: dict[str, Any]
    wall: float
    cpu_user: float
    cpu_system: float
    peak_rss_mb: float
    main_rss_mb: float
    others_rss_mb: float
    processes: int
    bench_cpu: float
    server_cpu: float | None
    calls: Counter[str] = field(default_factory=Counter)
    sync_calls: int = 0  # the calls the floor counts (the rest: one-time calls and reads)
    floor: int = 0
    time_floor: float = 0.0  # seconds the floor's calls take at least, at the vendor's limits
    max_in_flight: int = 0
    rejected_429: int = 0
    fake_cpu: float | None = None  # the fake's CPU in the run, when it has a process of its own
    fake_peak_kb: int = 0  # and that process's peak RSS so far
    workers: Usage | None = None  # on Celery workers: their CPU and largest peak RSS


def entry(env: dict[str, str]) -> str:
    """The module that is the command line: ``cli``, or in a tree from before the engine
    and the CLI left the core (``--source`` of an older commit), ``crmsync``."""
    source = env.get("PYTHONPATH")
    if source and (Path(source) / "crmsync" / "cli.py").exists():
        return "crmsync"
    return "cli"


def job_wait(env: dict[str, str]) -> tuple[str, ...]:
    """``--job-wait`` for a tree that has it (``--source`` of an older commit may not)."""
    source = env.get("PYTHONPATH")
    command_line = Path(source) / "cli" / "__init__.py" if source else None
    if command_line is None or (
        command_line.exists() and "--job-wait" in command_line.read_text(encoding="utf-8")
    ):
        return ("--job-wait", str(JOB_WAIT_S))
    return ()


def run_crmsync(
    config: Path,
    folder: Path,
    env: dict[str, str],
    database: str | None,
    extra: tuple[str, ...] = (),
) -> Run:
    """``crmsync run`` (with ``extra`` arguments, e.g. ``--workers celery``) as a
    subprocess; its report, wall time, CPU and memory (the coordinator's, on workers).

    It is started by /usr/bin/time, not by this process: a child forked from here and its
    ``ru_maxrss`` would count this process's memory (the fake's audience) from before the
    exec. time's ``%M`` is the largest peak RSS over crmsync and every process it waited
    for, and ``%U``/``%S`` their CPU. Without /usr/bin/time the peak is the sampled one.
    """
    out, err, usage_file = folder / "run.json", folder / "run.log", folder / "rusage.txt"
    command = [sys.executable, "-m", entry(env), "run", "--config", str(config)]
    command += ["--as-of", as_of(), "--json", "--no-progress", *job_wait(env), *extra]
    launcher = [str(TIME), "-f", "%M %U %S", "-o", str(usage_file)] if TIME.exists() else []
    self_before = _cpu_seconds()
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # cwd: the run's folder, so no worker finds the checkout's code by its current
        # directory when --source names another tree
        process = subprocess.Popen(
            [*launcher, *command], stdout=stdout, stderr=stderr, env=env, cwd=folder
        )
        watcher = Watcher(process.pid, database, launcher=bool(launcher))
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        watcher.stop()
    wall = time.perf_counter() - started
    bench_cpu = _cpu_seconds() - self_before
    if process.returncode not in (0, 5):  # 5: partial, some records failed; still a run
        tail = err.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"crmsync run exited {process.returncode}:\n{tail}")
    report = json.loads(out.read_text(encoding="utf-8"))[0]
    peak_kb, user, system = 0, usage.ru_utime, usage.ru_stime
    if launcher:
        # the last line: time writes "Command exited with non-zero status" above it
        last = usage_file.read_text(encoding="utf-8").splitlines()[-1].split()
        peak_kb, user, system = int(last[0]), float(last[1]), float(last[2])
    sampled = watcher.peaks()
    return Run(
        report=report,
        wall=wall,
        cpu_user=user,
        cpu_system=system,
        peak_rss_mb=max(peak_kb, sampled.main, sampled.others) / 1024,
        main_rss_mb=sampled.main / 1024,
        others_rss_mb=sampled.others / 1024,
        processes=sampled.processes,
        bench_cpu=bench_cpu,
        server_cpu=watcher.server_cpu(),
    )


def _cpu_seconds() -> float:
    """This process's CPU so far (the fake answers crmsync's calls here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
