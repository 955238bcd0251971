"""Cron expressions from the configuration, parsed once and reported under their key."""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

from crmsync.errors import ConfigError


def cron_trigger(expression: str, key: str, timezone: str = "UTC") -> CronTrigger:
    """Parses a 5-field cron expression, or raises ConfigError naming ``key``."""
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(
            f"invalid cron expression {expression!r}: {exc}",
            key=key,
            hint="five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *'",
        ) from exc
