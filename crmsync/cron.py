"""Cron expressions from the configuration, parsed once and reported under their key.

APScheduler is imported only to parse one: a configuration without schedules (and any
command but ``serve``, beyond this check) never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crmsync.errors import ConfigError

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger


def cron_trigger(expression: str, key: str, timezone: str = "UTC") -> CronTrigger:
    """Parses a 5-field cron expression, or raises ConfigError naming ``key``."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(
            f"invalid cron expression {expression!r}: {exc}",
            key=key,
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'",
        ) from exc
