"""Helpers for the Celery tests: the machine's brokers, a ``[celery]`` table with a queue
of the test's own, and real worker processes (``crmsync worker``) to start and kill.

The brokers are the machine's RabbitMQ (127.0.0.1:5672, guest/guest) and Redis
(127.0.0.1:6379); ``CRMSYNC_TEST_AMQP_URL`` and ``CRMSYNC_TEST_REDIS_URL`` point
elsewhere. Where one is missing, its tests skip with one line, except under ``CI=true``,
where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from kombu import Connection

ROOT = Path(__file__).resolve().parent.parent
BROKERS = {
    "amqp": os.environ.get("CRMSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": os.environ.get("CRMSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}


def broker_or_skip(kind: str) -> str:
    """The broker's URL, once it answers."""
    url = BROKERS[kind]
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        message = f"the {kind} broker is not reachable at {url}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true requires it)")
        pytest.skip(message)
    return url


def celery_table(broker: str, queue: str, people_per_slice: int = 100) -> str:
    """A ``[celery]`` table: Redis delivers a dead worker's task again after 5 s."""
    return f"""
[celery]
broker_url = "{broker}"
queue = "{queue}"
people_per_slice = {people_per_slice}
visibility_timeout_seconds = 5
idle_timeout_seconds = 120
"""


def new_queue() -> str:
    return f"crmsync-test-{uuid.uuid4().hex[:10]}"


class Workers:
    """Worker processes on one configuration: ``crmsync worker --pool solo`` by default
    (its task runs in the process itself, so a SIGKILL ends the task with it), or
    ``pool`` (``prefork``: as many child processes as ``concurrency``)."""

    def __init__(
        self,
        config: Path,
        logs: Path,
        env: dict[str, str] | None = None,
        pool: tuple[str, ...] = ("--pool", "solo"),
    ) -> None:
        self.config, self.logs, self.pool = config, logs, pool
        self.env = {**os.environ, **(env or {})}
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int = 1) -> None:
        for _ in range(count):
            number = len(self.processes)
            log = open(self.logs / f"worker-{number}.log", "wb")  # noqa: SIM115 (the child's)
            command = [sys.executable, "-m", "tests.celery_worker", "worker"]
            command += ["--config", str(self.config), *self.pool, "--loglevel", "INFO"]
            self.processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            )
            log.close()

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            if process.pid == pid:
                process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_of(self, pid: int) -> str:
        """The log of the worker with this process id."""
        number = next(i for i, p in enumerate(self.processes) if p.pid == pid)
        return (self.logs / f"worker-{number}.log").read_text(errors="replace")

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


@contextmanager
def workers(
    config: Path,
    logs: Path,
    broker: str,
    queue: str,
    count: int = 2,
    pool: tuple[str, ...] = ("--pool", "solo"),
    **env: str,
) -> Iterator[Workers]:
    """``count`` workers running until the block ends; the test's queue is deleted then."""
    logs.mkdir(parents=True, exist_ok=True)
    found = Workers(config, logs, env, pool)
    found.start(count)
    try:
        yield found
    finally:
        found.stop()
        # never declared (no task sent), or gone already: nothing to delete
        with Connection(broker) as conn, suppress(Exception):
            conn.default_channel.queue_delete(queue)
