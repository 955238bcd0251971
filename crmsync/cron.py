"""Schedules from the configuration (a cron expression or an interval), parsed once and
reported under their key.

APScheduler is imported only to build a trigger: a configuration without schedules (and
any command but ``serve``, beyond this check) never needs it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from crmsync.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger

_INTERVAL = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (86_400, 3_600, 60, 1)


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMBERED = re.compile(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?")


def weekdays(field: str) -> str:
    """A cron day-of-week field with its numbers as names: in cron 0 and 7 are Sunday, 1 is
    Monday, while APScheduler 3 reads 0 as Monday (``from_crontab`` keeps that for
    compatibility), which would move ``1-5`` to Tuesday to Saturday. A numbered part
    becomes the list of the days it means (``*/2``: Sunday, Tuesday, ...); names pass."""
    parts = []
    for part in field.split(","):
        found = _NUMBERED.fullmatch(part)
        if found is None or part == "*":
            parts.append(part)
            continue
        start, end, step = found.groups()
        first = 0 if start == "*" else int(start)
        last = 7 if start == "*" else int(end or start)
        if first > 7 or last > 7 or first > last:
            raise ValueError(f"day of week {part!r}: use 0-7 (0 and 7 are Sunday) or names")
        days = range(first, last + 1 if start != "*" else 7, int(step or 1))
        parts.extend(dict.fromkeys(_DAYS[day % 7] for day in days))
    return ",".join(dict.fromkeys(parts))


def cron_trigger(
    expression: str,
    key: str,
    timezone: str = "UTC",
    jitter: int | None = None,
    cls: type[CronTrigger] | None = None,
) -> CronTrigger:
    """Parses a 5-field cron expression with cron's meaning of its fields, or raises
    ConfigError naming ``key``; ``cls``: a CronTrigger class to build (default: it)."""
    from apscheduler.triggers.cron import CronTrigger

    build = cls or CronTrigger
    try:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields: {len(fields)}, expected 5")
        minute, hour, day, month, day_of_week = fields
        trigger = build(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekdays(day_of_week),
            timezone=timezone,
        )
    except ValueError as exc:
        raise ConfigError(
            f"invalid cron expression {expression!r}: {exc}",
            key=key,
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'",
        ) from exc
    trigger.jitter = jitter or None
    return trigger


def interval(text: str) -> timedelta:
    """``15m``, ``2h``, ``1h30m``, ``1d``, ``90s``: days, hours, minutes and seconds in that
    order, each at most once; raises ValueError for anything else (or nothing at all)."""
    found = _INTERVAL.fullmatch(text.strip().lower())
    if not found or not any(found.groups()):
        raise ValueError(f"{text!r} is not an interval; write e.g. 15m, 2h, 1h30m or 1d")
    seconds = sum(int(n) * unit for n, unit in zip(found.groups(), _UNITS, strict=True) if n)
    if seconds <= 0:
        raise ValueError(f"{text!r} is no time at all; write e.g. 15m")
    return timedelta(seconds=seconds)


def _interval_text(text: str) -> str:
    interval(text)
    return text.strip().lower()


IntervalText = Annotated[str, AfterValidator(_interval_text)]


def schedule_trigger(
    *,
    schedule: str | None,
    every: str | None,
    key: str,
    timezone: str,
    jitter: int | None = None,
    cron: type[CronTrigger] | None = None,
) -> BaseTrigger | None:
    """The trigger of a pipeline's ``schedule`` (cron) or ``every`` (interval), in
    ``timezone`` (cron fields are wall-clock times there, DST included); None when it has
    neither. An interval counts from the moment the trigger is built."""
    if schedule:
        return cron_trigger(schedule, f"{key}.schedule", timezone, jitter, cron)
    if every:
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(
            seconds=int(interval(every).total_seconds()), timezone=timezone, jitter=jitter or None
        )
    return None
