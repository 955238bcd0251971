"""``crmsync serve``'s scheduler: the stores it serves, their jobs, reload and stop.

APScheduler fires one job per scheduled pipeline (``service.schedules``) from a job store
in the state database itself (table ``crmsync_schedules``), so a restart finds each job
with the next run time it had: a run missed while the service was down runs once at start
(missed runs coalesce into one) if it is late by less than ``serve.misfire_grace_seconds``,
and is skipped otherwise; a scheduled time that ran before the restart does not run again.
Runs go to a pool of ``serve.max_parallel`` threads (``service.executor``); one pipeline
runs at most once at a time, in this process (APScheduler's ``max_instances``) and across
processes (the pipeline's lease, ``service.runner``).

A reload (SIGHUP) loads every store again: a store that loads runs with its new
configuration from its next run on (a run under way ends with the one it started with);
a store that does not load is reported with its issues and keeps the configuration it had.
A job whose schedule did not change keeps its next run time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler

from crmsync.config import Config
from crmsync.errors import ConfigError
from service.events import NextRun, Observer, RunSkipped, StoreBroken, StoreLoaded
from service.executor import RunExecutor
from service.runner import RunFn, Runner
from service.schedules import Plan, job_id, plans, same_schedule, store_prefix
from service.stop import StopFlag
from service.stores import StoreSet, load_stores
from state.engines import KeptEngines
from state.store import Store

log = logging.getLogger("crmsync.service")

JOBS_TABLE = "crmsync_schedules"
EXECUTOR = "runs"
Clock = Callable[[], datetime]
_ACTIVE: dict[str, Service] = {}  # "service": the one whose jobs ``scheduled_run`` names


def utc_now() -> datetime:
    return datetime.now(UTC)


def scheduled_run(store: str, pipeline: str) -> None:
    """The function every job names (a job store keeps a reference to it, not the job):
    ``RunExecutor`` hands jobs to ``Service.fire`` with their scheduled time instead; a
    caller without one runs the pipeline now."""
    active = _ACTIVE.get("service")
    if active is not None:
        active.run_now(store, pipeline)


class Service:
    """The stores of ``path`` (a file or a directory of store files) on their schedules."""

    def __init__(
        self,
        path: str | Path,
        observers: Observer,
        *,
        scheduler: BaseScheduler | None = None,
        clock: Clock = utc_now,
        runner: Runner | None = None,
        run: RunFn | None = None,
        load: Callable[[str | Path], StoreSet] = load_stores,
    ) -> None:
        self.path, self.observers, self.clock, self._load = path, observers, clock, load
        self.stop_flag = StopFlag()
        # every run, and the schedules' job stores, on one engine per state database
        self.engines = KeptEngines()
        self.runner = runner or Runner(observers, self.stop_flag, run=run, engines=self.engines)
        self.scheduler = scheduler or BackgroundScheduler(timezone=UTC)
        self.stores: dict[str, Config] = {}  # the configuration each store runs with
        self.loaded: StoreSet | None = None
        self._jobs: dict[str, tuple[str, str]] = {}  # job id -> (store, pipeline)
        self._jobstores: dict[str, str] = {}  # state URL -> job store alias
        self._lock = threading.RLock()  # reload (main thread) against fire (workers)

    # -- start, reload, stop --------------------------------------------------------

    def start(self) -> None:
        """Loads the stores and starts their schedules; ConfigError when none loads."""
        loaded = self._load(self.path)
        if not loaded.configs:
            issues = [i for found in loaded.broken.values() for i in found]
            raise ConfigError(issues or "no store to serve")
        first = next(iter(loaded.configs.values()))
        workers = first.settings.serve.max_parallel
        self.scheduler.add_executor(RunExecutor(workers, self.fire), EXECUTOR)
        self.scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        _ACTIVE["service"] = self
        self.scheduler.start()
        self._apply(loaded, first=True)
        log.info("serving %d store(s), up to %d runs at once", len(self.stores), workers)

    def reload(self) -> bool:
        """Loads the stores again (SIGHUP); False when some store did not load (it keeps
        the configuration it had, if it had one)."""
        try:
            loaded = self._load(self.path)
        except ConfigError as exc:  # the path itself: every store keeps what it had
            issues = tuple(str(i) for i in exc.issues)
            log.error("reload refused, the configuration in use stays: %s", "; ".join(issues))
            for name in self.stores:
                self.observers.notify(StoreBroken(name, issues, kept_previous=True))
            return False
        return self._apply(loaded, first=False)

    def stop(self, reason: str, exit_code: int) -> None:
        """No new run starts; the runs under way stop after the batch in flight
        (``service.stop``). ``wait`` then tells when they have ended."""
        self.stop_flag.set(reason, exit_code)
        if self.scheduler.state != STATE_STOPPED:
            self.scheduler.shutdown(wait=False)
        _ACTIVE.pop("service", None)

    def wait(self, timeout: float) -> bool:
        return self.runner.wait(timeout)

    def close(self) -> None:
        """Closes the state databases' connections, once every run has ended (``wait``)."""
        self.engines.close()

    # -- stores and their jobs -------------------------------------------------------

    def _apply(self, loaded: StoreSet, *, first: bool) -> bool:
        with self._lock:
            clean = True
            for name, issues in loaded.broken.items():
                clean = False
                kept = name in self.stores
                text = tuple(str(i) for i in issues)
                log.error(
                    "store %s does not load%s: %s",
                    name or "(configuration)",
                    ", its previous configuration stays" if kept else ", it does not sync",
                    "; ".join(text),
                )
                self.observers.notify(StoreBroken(name, text, kept_previous=kept))
            for config in loaded.configs.values():  # every job store open before the read
                self._jobstore(config.state_url)
            jobs = {job.id: job for job in self.scheduler.get_jobs()}  # one read for all
            for name in [n for n in self.stores if n not in loaded.entries]:
                log.warning("store %s removed: its schedules stop", name or "(configuration)")
                self._schedule(name, None, jobs)
                del self.stores[name]
            for name, config in loaded.configs.items():
                before = self.stores.get(name)
                self.stores[name] = config
                self._schedule(name, config, jobs)
                if before is None or not first:
                    self.observers.notify(StoreLoaded(name, tuple(config.pipelines), config))
            self.loaded = loaded
            return clean

    def _schedule(self, store: str, config: Config | None, jobs: dict[str, Job]) -> None:
        """Makes the store's jobs those of ``config`` (none for None), keeping the next
        run time of every job whose schedule is unchanged."""
        wanted = {plan.job_id: plan for plan in plans(store, config)} if config else {}
        alias = self._jobstore(config.state_url) if config else None
        prefix = store_prefix(store)
        for job in list(jobs.values()):
            if job.id.startswith(prefix) and job.id not in wanted:
                del jobs[job.id]
                name = self._jobs.pop(job.id, ("", job.args[1]))[1]
                job.remove()
                log.info("pipeline %s is not scheduled any more", name)
                self.observers.notify(NextRun(store, name, None))
        for plan in wanted.values():
            assert alias is not None
            self._jobs[plan.job_id] = (store, plan.pipeline)
            self._announce(self._job(plan, alias, jobs.get(plan.job_id)), plan)

    def _job(self, plan: Plan, alias: str, job: Job | None) -> Job:
        if job is None:
            return self.scheduler.add_job(
                scheduled_run,
                trigger=plan.trigger,
                args=(plan.store, plan.pipeline),
                id=plan.job_id,
                name=plan.pipeline,
                jobstore=alias,
                executor=EXECUTOR,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,  # ``fire`` judges lateness, with the store's grace
                replace_existing=True,
            )
        if not same_schedule(job.trigger, plan.trigger):
            log.info("schedule of %s changed", plan.pipeline)
            return self.scheduler.reschedule_job(plan.job_id, alias, trigger=plan.trigger)
        return job

    def _announce(self, job: Job, plan: Plan) -> None:
        at: datetime | None = getattr(job, "next_run_time", None)
        shown = at.astimezone(job.trigger.timezone).isoformat() if at else "never"
        log.info("next run of %s at %s (%s)", plan.pipeline, shown, plan.timezone)
        self.observers.notify(NextRun(plan.store, plan.pipeline, at))

    def _jobstore(self, url: str) -> str:
        alias = self._jobstores.get(url)
        if alias is None:
            alias = self._jobstores[url] = f"state{len(self._jobstores)}"
            engine = Store(url, kept=self.engines).engine  # the runs' own, migrated
            self.scheduler.add_jobstore(
                SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE), alias
            )
        return alias

    # -- runs ------------------------------------------------------------------------

    def fire(self, job: Job, scheduled: datetime) -> None:
        """A job is due (``RunExecutor``): its pipeline runs unless it is late by more than
        the misfire grace, no longer configured, or the service is stopping."""
        store, pipeline = job.args
        with self._lock:
            config = self.stores.get(store)
        spec = config.pipelines.get(pipeline) if config is not None else None
        if config is None or spec is None:
            log.warning("pipeline %s is not configured any more: not run", pipeline)
            return
        late = (self.clock() - scheduled).total_seconds()
        grace = config.settings.serve.misfire_grace_seconds
        if late > grace:
            reason = f"missed by {late:.0f}s, more than serve.misfire_grace_seconds ({grace})"
            log.warning("run of %s skipped: %s", pipeline, reason)
            self.observers.notify(RunSkipped(store, pipeline, reason, at=self.clock()))
        else:
            jitter = next((p.jitter for p in plans(store, config) if p.pipeline == pipeline), 0)
            self.runner.run(store, config, spec, kind="scheduled", tick=scheduled, jitter=jitter)
        self._next(store, pipeline)

    def run_now(self, store: str, pipeline: str) -> None:
        with self._lock:
            config = self.stores.get(store)
        if config is not None and pipeline in config.pipelines:
            self.runner.run(store, config, config.pipelines[pipeline], kind="scheduled")

    def _next(self, store: str, pipeline: str) -> None:
        if self.stop_flag.is_set():
            return
        job = self.scheduler.get_job(job_id(store, pipeline))
        if job is not None:
            at = job.next_run_time
            log.info("next run of %s at %s", pipeline, at.isoformat() if at else "never")
            self.observers.notify(NextRun(store, pipeline, at))

    def _on_max_instances(self, event: Any) -> None:
        """A job came due while its previous run was still going: that time is skipped
        (no pile-up); the next one is computed as usual."""
        if not isinstance(event, JobSubmissionEvent) or event.job_id not in self._jobs:
            return
        store, pipeline = self._jobs[event.job_id]
        reason = "the previous run is still going"
        log.warning("run of %s skipped: %s", pipeline, reason)
        self.observers.notify(RunSkipped(store, pipeline, reason, at=self.clock()))
