"""Sending a phase's tasks and waiting for them, from the state database.

A phase's tasks are queued in ``work_tasks`` (one transaction) before their messages go
out, so a worker always finds its task's row; then the coordinator watches the rows,
not the broker: a task is over when its row says so, whichever worker ran it and
however often it was delivered. A task that ends notifies the run's PostgreSQL channel
(``state.work_queue.channel``) as its transaction commits, and the coordinator, which
listens on it, looks again at once (and every ``HEARD_MAX`` seconds anyway). A failed
task fails the phase with its error; a phase none of whose tasks ended for
``idle_timeout_seconds`` fails saying that no worker seems to be taking them. While it
waits, the coordinator renews the pipeline's lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from crmsync.config import CelerySettings
from crmsync.errors import CrmsyncError
from crmsync.progress import NoProgress, Progress
from distributed.work import Work
from engine.push import LEASE_SECONDS
from state.store import Store
from state.work_queue import DONE, FAILED, TaskRow, add_tasks, channel, task_states, tasks

log = logging.getLogger("crmsync.distributed")
POLL_FIRST, POLL_MAX = 0.05, 0.25  # seconds between looks at the phase's tasks
HEARD_MAX = 1.0  # seconds between looks while listening: a task's end wakes it sooner
RENEW_EVERY = 60.0  # seconds between renewals of the pipeline's lease while waiting


class TaskFailed(CrmsyncError):
    """A task of the run failed; the run fails with its error."""


class WorkersIdle(CrmsyncError):
    """No task of a phase ended for too long: no worker seems to be taking them."""


@dataclass(frozen=True)
class Task:
    key: str  # state.work_queue's key of the task in its run
    name: str  # the Celery task's name
    kwargs: dict[str, Any] = field(default_factory=dict)


Publish = Callable[[Celery, Task, str], None]


def publish(app: Celery, task: Task, queue: str) -> None:
    app.send_task(task.name, kwargs=task.kwargs, queue=queue)


class Dispatch:
    """Sends a run's tasks phase by phase and waits for each phase to end."""

    def __init__(
        self,
        app: Celery,
        settings: CelerySettings,
        store: Store,
        work: Work,
        lease: tuple[str, str] | None,
        send: Publish | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.app, self.settings, self.store, self.work = app, settings, store, work
        self.lease, self._send = lease, send
        self.progress = progress or NoProgress()  # a bar (and a -v line) per phase
        self._renewed = time.monotonic()

    def run(self, phase: str, batch: Sequence[Task], *, longest: float = 0.0) -> dict[str, TaskRow]:
        """Sends ``batch`` and waits until each of its tasks is done; returns their rows.
        ``longest``: seconds a task of the phase may take by design (a collect's wait)."""
        if not batch:
            return {}
        keys = [t.key for t in batch]
        with self.store.transaction() as conn:
            add_tasks(conn, self.work.run, keys)
        send = self._send or publish  # looked up now: a test may stand in for it
        for task in batch:
            send(self.app, task, self.settings.queue)
        log.info("run %d: %s: %d task(s) sent", self.work.run, phase, len(batch))
        idle = max(self.settings.idle_timeout_seconds, longest + RENEW_EVERY)
        self.progress.start(phase, len(keys), unit="tasks")
        rows = self._wait(phase, set(keys), idle)
        self.progress.finish(phase, len(keys))
        return rows

    def _wait(self, phase: str, keys: set[str], idle: float) -> dict[str, TaskRow]:
        with _Listener(self.store, channel(self.work.run)) as wait:
            return self._watch(phase, keys, idle, wait)

    def _watch(
        self, phase: str, keys: set[str], idle: float, wait: Callable[[float], None]
    ) -> dict[str, TaskRow]:
        pause, ended = POLL_FIRST, 0
        progressed = time.monotonic()
        prefix = _common_prefix(keys)
        while True:
            with self.store.engine.connect() as conn:
                states = task_states(conn, self.work.run, prefix)
            if any(states.get(k) == FAILED for k in keys):
                with self.store.engine.connect() as conn:
                    rows = tasks(conn, self.work.run, prefix)
                key = min(k for k in keys if rows[k].state == FAILED)
                raise TaskFailed(f"{phase}: task {key} failed: {rows[key].error}")
            now = sum(1 for k in keys if states.get(k) == DONE)
            if now == len(keys):
                with self.store.engine.connect() as conn:
                    rows = tasks(conn, self.work.run, prefix)
                return {k: r for k, r in rows.items() if k in keys}
            if now > ended:
                self.progress.advance(phase, now - ended)
                ended, progressed, pause = now, time.monotonic(), POLL_FIRST
            elif time.monotonic() - progressed > idle:
                raise WorkersIdle(
                    f"{phase}: {len(keys) - now} of {len(keys)} task(s) not done, and none "
                    f"ended for {idle:.0f}s: is a worker (crmsync worker --config ...) "
                    f"taking queue {self.settings.queue!r}, and reaching the state "
                    "database? (its log tells)"
                )
            self._renew()
            wait(pause)
            pause = min(pause * 1.5, POLL_MAX)

    def _renew(self) -> None:
        if self.lease is None or time.monotonic() - self._renewed < RENEW_EVERY:
            return
        pipeline, holder = self.lease
        self.store.renew_lease(f"pipeline:{pipeline}", holder, LEASE_SECONDS)
        self._renewed = time.monotonic()


class _Listener:
    """Waits for a notification on ``name`` (PostgreSQL: LISTEN, on a connection of its
    own), or for the time given, whichever comes first; elsewhere, for the time."""

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self._raw: Any = None
        self._pg: Any = None

    def __enter__(self) -> Callable[[float], None]:
        if self.store.engine.dialect.name != "postgresql":
            return time.sleep
        self._raw = self.store.engine.raw_connection()
        self._pg = self._raw.driver_connection
        self._raw.detach()  # its session listens: never back into the pool
        self._pg.autocommit = True
        self._pg.execute(f'LISTEN "{self.name}"')
        return self._heard

    def _heard(self, _pause: float) -> None:
        # a task's end wakes the wait (the poll's pause does not apply); without one,
        # look again after HEARD_MAX
        for _ in self._pg.notifies(timeout=HEARD_MAX, stop_after=1):
            pass
        for _ in self._pg.notifies(timeout=0):  # several ended at once: one look for all
            pass

    def __exit__(self, *_: object) -> None:
        if self._raw is not None:
            self._raw.close()


def _common_prefix(keys: set[str]) -> str:
    """The phase's keys' common beginning ("push/"), to read only their rows."""
    ordered = sorted(keys)
    first, last = ordered[0], ordered[-1]
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]
