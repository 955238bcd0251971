"""How report figures are written, the same on a terminal and in HTML."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

DASH = "–"


def money(value: Decimal | None) -> str:
    """``1,234,567.89``: the currency's minor unit kept, thousands separated."""
    return DASH if value is None else f"{value:,}"


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def moved(value: int | None, sign: str) -> str:
    """Joined (``+``) or left (``-``) counts; a dash without an earlier planning."""
    if value is None:
        return DASH
    return f"{sign}{value:,}" if value else "0"


def when(value: datetime | None) -> str:
    return DASH if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def day(value: datetime | None) -> str:
    return DASH if value is None else f"{value:%Y-%m-%d}"
