"""The Celery side of a bench run on N workers: the broker, the ``[celery]`` table and the
shared rate budget in the configuration, and the ``crmsync worker`` processes themselves.

Each worker is ``crmsync worker --pool solo``: one process that runs one task at a time in
itself, so N processes are N tasks at once (the machine's cores are the limit, not the
pool), and each process's CPU and peak RSS are its own, with no pool children to add up.
The workers are this process's children, started fresh for each configuration on a queue
of the bench's own, and stopped with SIGTERM once its three runs are done; their CPU per
run is sampled from ``/proc`` and their peak RSS is the kernel's high-water mark, reset
before each run (``/proc/<pid>/clear_refs``).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bench.e2e.watch import cpu_ticks, status_kb

BROKERS = {
    "redis": os.environ.get("CRMSYNC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "amqp": os.environ.get("CRMSYNC_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
}
# the Mailchimp account's budget for every worker: a Redis database apart from the broker's
BUDGET_URL = os.environ.get("CRMSYNC_BENCH_BUDGET_URL", "redis://127.0.0.1:6379/2")
SLICES_PER_WORKER = 4  # "several slices" each, so a slow slice does not decide the wall
READY_SECONDS = 90.0  # a worker not ready by then has failed to start


class BenchRefused(ValueError):
    """What was asked for cannot be measured (a configuration error, not a failed run)."""


def parse_workers(text: str) -> tuple[int, ...]:
    """``0,1,2,4`` -> (0, 1, 2, 4): 0 is the run in one process, N > 0 N Celery workers.
    In ascending order, so the in-process audience and the one-worker wall come first."""
    try:
        counts = {int(part) for part in text.split(",") if part.strip()}
    except ValueError as exc:
        raise BenchRefused(f"--workers takes counts like 0,1,2: {text!r}") from exc
    if not counts or min(counts) < 0:
        raise BenchRefused(f"--workers takes counts >= 0 like 0,1,2: {text!r}")
    return tuple(sorted(counts))


def refuse_sqlite(engines: list[str], workers: tuple[int, ...]) -> None:
    """Celery workers share the state database: PostgreSQL only (SQLite is one machine's
    file, and crmsync itself refuses a run on workers with SQLite state)."""
    if "sqlite" in engines and any(workers):
        raise BenchRefused(
            "--workers N>0 runs on Celery workers, which need PostgreSQL state: "
            "use --engines postgresql (sqlite only measures --workers 0)"
        )


def people_per_slice(size: int, most_workers: int) -> int:
    """Customers per plan task: ``SLICES_PER_WORKER`` slices for each of the most workers
    asked for, the same for every worker count of the size, so their walls compare."""
    return max(1, math.ceil(size / (SLICES_PER_WORKER * max(1, most_workers))))


def celery_text(
    broker: str, queue: str, per_slice: int, budget: str = BUDGET_URL, shared: str = "mc"
) -> str:
    """What a bench run on workers adds to the configuration: the destination's shared
    budget (all workers together within the fake's limits) and the ``[celery]`` table.
    ``shared`` names the destination whose own ``http.rate.shared`` holds the budget (the
    Mailchimp one, as before ``[celery] shared_budget``); "" sets ``shared_budget`` in
    ``[celery]`` instead, for every destination of the run (Klaviyo and HubSpot here)."""
    table = f'[destinations.{shared}.http.rate]\nshared = "{budget}"\n' if shared else ""
    everyone = "" if shared else f'shared_budget = "{budget}"\n'
    return f"""
{table}
[celery]
broker_url = "{broker}"
queue = "{queue}"
people_per_slice = {per_slice}
idle_timeout_seconds = 300
{everyone}"""


def new_queue() -> str:
    return f"crmsync-bench-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Usage:
    """The workers' share of one run: CPU seconds (all of them), the largest peak RSS (kB)."""

    cpu: float
    peak_kb: int


class Workers:
    """N ``crmsync worker --pool solo`` processes on one configuration, logging to ``logs``."""

    def __init__(self, command: list[str], config: Path, logs: Path, env: dict[str, str]):
        self.command, self.config, self.logs, self.env = command, config, logs, env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.lifetime_cpu = 0.0  # from their rusage once they stopped

    def start(self, count: int) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for number in range(count):
            with open(self.logs / f"worker-{number}.log", "wb") as log:  # the child's now
                command = [*self.command, "worker", "--config", str(self.config)]
                command += ["--pool", "solo", "--loglevel", "INFO"]
                self.processes.append(
                    subprocess.Popen(
                        command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self.env,
                        cwd=self.config.parent,
                    )
                )

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Until every worker logged that it is ready, so no run's wall includes a
        worker's start; a worker that exits or never gets there fails the bench."""
        deadline = time.monotonic() + timeout
        waiting = set(range(len(self.processes)))
        while waiting:
            for number in sorted(waiting):
                if self.processes[number].poll() is not None:
                    raise RuntimeError(f"worker {number} exited:\n{self.log_tail(number)}")
                if " ready." in self._log(number):
                    waiting.discard(number)
            if waiting and time.monotonic() > deadline:
                first = min(waiting)
                raise RuntimeError(
                    f"worker(s) {sorted(waiting)} not ready in {timeout:.0f} s (is the broker "
                    f"up?); worker {first}'s log:\n{self.log_tail(first)}"
                )
            time.sleep(0.2)

    def before_run(self) -> float:
        """Resets each worker's peak RSS; returns their CPU so far."""
        for process in self.processes:
            with suppress(OSError):  # "5": reset the high-water mark (Linux >= 4.0)
                Path(f"/proc/{process.pid}/clear_refs").write_text("5")
        return self._cpu()

    def after_run(self, cpu_before: float) -> Usage:
        """The workers' CPU since ``before_run`` and their largest peak RSS meanwhile."""
        peaks = [status_kb(p.pid, "VmHWM") for p in self.processes]
        for number, process in enumerate(self.processes):
            if process.poll() is not None:
                raise RuntimeError(f"worker {number} died in the run:\n{self.log_tail(number)}")
        return Usage(self._cpu() - cpu_before, max(peaks, default=0))

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to every worker (a warm shutdown), then their rusage; SIGKILL to any
        still running after ``timeout``."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            if process.returncode is not None:
                continue
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    self.lifetime_cpu += usage.ru_utime + usage.ru_stime
                    break
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    break
                time.sleep(0.1)

    def log_tail(self, number: int, chars: int = 3000) -> str:
        return self._log(number)[-chars:]

    def _log(self, number: int) -> str:
        return (self.logs / f"worker-{number}.log").read_text(encoding="utf-8", errors="replace")

    def _cpu(self) -> float:
        """CPU seconds so far of all workers (a solo worker has no children to add)."""
        ticks = sum(cpu_ticks(p.pid) or 0 for p in self.processes)
        return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def running(
    command: list[str],
    config: Path,
    logs: Path,
    env: dict[str, str],
    count: int,
    broker: str,
    queue: str,
) -> Iterator[Workers]:
    """``count`` fresh workers, ready, until the block ends; then stopped and the bench's
    queue deleted."""
    found = Workers(command, config, logs, env)
    try:
        found.start(count)
        found.wait_ready()
        yield found
    finally:
        found.stop()
        forget_queue(broker, queue)


def forget_queue(broker: str, queue: str) -> None:
    """Deletes the bench's queue; on Redis also kombu's binding sets of it, which a
    ``queue_delete`` from a fresh connection leaves behind (it knows no bindings)."""
    from kombu.connection import Connection

    with Connection(broker) as conn, suppress(Exception):  # type: ignore[no-untyped-call]
        conn.default_channel.queue_delete(queue)  # never declared when no task was sent
    if broker.startswith("redis"):
        import redis

        with redis.Redis.from_url(broker) as client, suppress(redis.RedisError):
            client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def crmsync_command(entry: str) -> list[str]:
    """The command line crmsync runs as here (``python -m <entry>``)."""
    return [sys.executable, "-m", entry]
