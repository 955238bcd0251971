"""Which pipelines ``serve`` runs when: one APScheduler job per scheduled pipeline.

A job is named by its store and pipeline (``job_id``) so that every process serving the
same configuration on the same state database finds the same job in the shared job store,
and a restart finds the job (and its next run time) it left there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from crmsync.config import Config
from crmsync.cron import schedule_trigger

JOB_PREFIX = "crmsync:"


@dataclass(frozen=True)
class Plan:
    """A pipeline's schedule, as ``serve`` hands it to APScheduler."""

    store: str
    pipeline: str
    trigger: BaseTrigger
    timezone: str
    jitter: int

    @property
    def job_id(self) -> str:
        return job_id(self.store, self.pipeline)


def job_id(store: str, pipeline: str) -> str:
    return f"{JOB_PREFIX}{store}:{pipeline}"


def store_prefix(store: str) -> str:
    """What the ids of one store's jobs begin with."""
    return f"{JOB_PREFIX}{store}:"


def plans(store: str, config: Config) -> list[Plan]:
    """The scheduled pipelines of one store's configuration (``schedule`` or ``every``),
    each in its own time zone (default: ``defaults.timezone``)."""
    found = []
    serve = config.settings.serve
    for spec in config.pipelines.values():
        settings = spec.settings
        zone = settings.timezone or config.settings.defaults.timezone
        jitter = (
            serve.jitter_seconds if settings.jitter_seconds is None else settings.jitter_seconds
        )
        trigger = schedule_trigger(
            schedule=settings.schedule,
            every=settings.every,
            key=f"pipelines.{spec.name}",
            timezone=zone,
            jitter=jitter,
            cron=WallClockCron,
        )
        if trigger is not None:
            found.append(Plan(store, spec.name, trigger, zone, jitter))
    return found


def same_schedule(a: BaseTrigger, b: BaseTrigger) -> bool:
    """Whether two triggers fire at the same times (an interval's start is left out: it is
    the moment its trigger was built, so a reload that keeps ``every`` keeps the job)."""
    return _signature(a) == _signature(b)


def _signature(trigger: BaseTrigger) -> tuple[object, ...]:
    zone = getattr(trigger, "timezone", None)
    return (type(trigger).__name__, str(trigger), str(zone), getattr(trigger, "jitter", None))


class WallClockCron(CronTrigger):  # type: ignore[misc]
    """A cron trigger that runs once at a wall-clock time the autumn's DST change repeats:
    ``30 2 * * *`` runs at the first 02:30 of that night, not at both (APScheduler's
    would), as cron does for a fixed hour; an hour field with ``*`` still runs in each of
    the two hours. A time the spring's change skips runs once, an hour later by the clock
    (02:30 is 03:30 that night). (Module-level: the job store pickles it.)"""

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        jitter: int | None = getattr(self, "jitter", None)
        setattr(self, "jitter", None)  # noqa: B010 (untyped slot) compared without it
        try:
            found: datetime | None = super().get_next_fire_time(previous, now)
            if found is not None and previous is not None and self._repeated(previous, found):
                found = super().get_next_fire_time(found, found)
        finally:
            setattr(self, "jitter", jitter)  # noqa: B010
        if found is None:
            return None
        jittered: datetime = self._apply_jitter(found, jitter, now)
        return jittered

    def _repeated(self, previous: datetime, found: datetime) -> bool:
        """``found`` shows the same wall-clock time as ``previous`` (with a fixed hour)."""
        hour = next(f for f in self.fields if f.name == "hour")
        if "*" in str(hour):
            return False
        local = [t.astimezone(self.timezone).replace(tzinfo=None) for t in (previous, found)]
        return local[0] == local[1]
