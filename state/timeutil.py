"""Conversions between aware datetimes and the integer milliseconds the state DB stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def to_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    return int(value.timestamp() * 1000)


def from_ms(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, UTC)


def now_ms() -> int:
    return int(time.time() * 1000)
