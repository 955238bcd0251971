"""Schedules from the configuration, run in the background with APScheduler.

Each pipeline with a ``schedule`` (a 5-field cron expression) becomes one job. A job never
overlaps itself (``max_instances=1``; the pipeline's lease also guards against other
processes), missed runs are coalesced into one, and a failing run is logged and retried at
the next tick instead of stopping the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from crmsync.config import Config, PipelineSpec
from crmsync.cron import cron_trigger
from crmsync.errors import ConfigError, CrmsyncError

log = logging.getLogger("crmsync.scheduler")

RunOne = Callable[[PipelineSpec], object]


def add_jobs(scheduler: BaseScheduler, config: Config, run_one: RunOne) -> list[str]:
    """One job per scheduled pipeline; returns the pipeline names scheduled."""
    names = []
    timezone = config.settings.defaults.timezone
    for spec in config.pipelines.values():
        if not spec.settings.schedule:
            continue
        trigger = cron_trigger(spec.settings.schedule, f"pipelines.{spec.name}.schedule", timezone)
        scheduler.add_job(
            _guarded(run_one, spec),
            trigger=trigger,
            id=f"pipeline:{spec.name}",
            name=spec.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=300,
            replace_existing=True,
        )
        names.append(spec.name)
    return names


def _guarded(run_one: RunOne, spec: PipelineSpec) -> Callable[[], None]:
    def job() -> None:
        try:
            run_one(spec)
        except CrmsyncError as exc:
            log.error("scheduled run of %s failed: %s", spec.name, exc)
        except Exception:
            log.exception("scheduled run of %s crashed", spec.name)

    return job


def serve(config: Config, run_one: RunOne) -> None:
    """Runs the schedules in the foreground until interrupted."""
    scheduler = BlockingScheduler(timezone=config.settings.defaults.timezone)
    names = add_jobs(scheduler, config, run_one)
    if not names:
        raise ConfigError(
            "no pipeline has a schedule",
            key="pipelines.*.schedule",
            hint="add schedule = '*/15 * * * *' to a pipeline",
        )
    log.warning("serving schedules for: %s", ", ".join(names))
    scheduler.start()
