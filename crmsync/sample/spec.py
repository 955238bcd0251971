"""What to generate: the size, seed and clock of a sample store.

Every time in the sample is relative to ``now`` so the same spec always gives the same
bytes, whatever day the generator runs on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

ISTANBUL = timezone(timedelta(hours=3), "+03")  # Türkiye keeps UTC+3 all year since 2016
DEFAULT_NOW = datetime(2026, 11, 1, 12, 0, tzinfo=ISTANBUL)
HISTORY_DAYS = 4 * 365  # how far back the store's first customer signed up


@dataclass(frozen=True)
class SampleSpec:
    """The parameters of one sample store; equal specs give byte-identical output."""

    customers: int = 2000
    seed: int = 7
    now: datetime = DEFAULT_NOW
    orders_per_customer: float = 5.0
    dirty_rate: float = 0.0  # chance, per customer, that one dirty record follows it

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("SampleSpec.now must be timezone-aware")
        if self.customers < 0:
            raise ValueError("SampleSpec.customers must not be negative")
        if not (math.isfinite(self.orders_per_customer) and self.orders_per_customer >= 0):
            raise ValueError("SampleSpec.orders_per_customer must be a finite number >= 0")
        if not 0.0 <= self.dirty_rate <= 1.0:
            raise ValueError("SampleSpec.dirty_rate must be between 0 and 1")


# The spec of the bundled sample_data/ directory (regenerate: write_files(BUNDLED_SPEC, dir)).
# Two orders per customer rather than five keeps the files under 3 MB (five makes ~6 MB).
BUNDLED_SPEC = SampleSpec(
    customers=2000, seed=7, now=DEFAULT_NOW, orders_per_customer=2.0, dirty_rate=0.01
)


@dataclass(frozen=True, slots=True)
class Frame:
    """The spec's clock in whole epoch seconds, which is what the generator works in."""

    now: int
    start: int
    today: int  # proleptic ordinal of now's date, for birthdays

    @classmethod
    def of(cls, spec: SampleSpec) -> Frame:
        now = int(spec.now.timestamp())
        return cls(now, now - HISTORY_DAYS * 86400, spec.now.date().toordinal())


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def birthday_from(today: int, age_days: int) -> date:
    return date.fromordinal(today - age_days)


def money(cents: int) -> Decimal:
    """Kuruş as a two-place Decimal: 123450 -> Decimal('1234.50')."""
    return Decimal(cents).scaleb(-2)
