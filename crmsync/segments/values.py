"""Typed, compiled expressions and the built-in functions of the rule language.

Every sub-expression of a rule compiles to a ``Compiled``: its static type (checked when
the rule loads, never while profiles are evaluated) and a closure ``fn(profile, now)``.
Constants are folded at compile time and sub-expressions that depend only on ``now``
(``now - days(90)``) are computed once per run, not once per profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

Fn = Callable[[Mapping[str, Any], datetime], Any]

NUMBER, TEXT, BOOLEAN, DATE, DATETIME = "number", "text", "boolean", "date", "datetime"
DURATION, LIST, NULL = "duration", "list", "null"

# how a catalogue type is seen by rules: integers and decimals are both numbers
FIELD_TYPES = {
    "text": TEXT,
    "integer": NUMBER,
    "decimal": NUMBER,
    "boolean": BOOLEAN,
    "date": DATE,
    "datetime": DATETIME,
    "list": LIST,
}

TYPE_WORDS = {
    NUMBER: "a number",
    TEXT: "text",
    BOOLEAN: "true/false",
    DATE: "a date",
    DATETIME: "a datetime",
    DURATION: "a duration",
    LIST: "a list",
    NULL: "null",
}


@dataclass(frozen=True, slots=True)
class Compiled:
    type: str
    fn: Fn
    const: bool = False  # the value is known now; ``value`` holds it
    value: object = None
    field: str | None = None  # a bare read of this profile field
    now_only: bool = False  # depends on ``now`` but not on the profile
    elem: str | None = None  # for lists: the element type (None for an empty literal)
    strict: bool = False  # fn always returns a real bool (comparisons, and/or/not)


def constant(value: object, type_: str, *, elem: str | None = None) -> Compiled:
    return Compiled(type_, lambda p, now: value, const=True, value=value, elem=elem)


def derived(type_: str, fn: Fn, *parts: Compiled, strict: bool = False) -> Compiled:
    """A node computed from ``parts``: folded when they are constant, memoised per ``now``."""
    if all(part.const for part in parts):
        value = fn({}, _EPOCH)
        return Compiled(type_, lambda p, now: value, const=True, value=value, strict=strict)
    if all(part.const or part.now_only for part in parts):
        return Compiled(type_, once_per_now(fn), now_only=True, strict=strict)
    return Compiled(type_, fn, strict=strict)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSET = object()


def once_per_now(fn: Fn) -> Fn:
    """``fn`` computed once for each distinct ``now`` object (the run's as-of time).

    The cache is one tuple swapped atomically, so concurrent callers at worst recompute.
    """
    cache: list[tuple[object, object]] = [(_UNSET, None)]

    def memo(profile: Mapping[str, object], now: datetime) -> object:
        seen, value = cache[0]
        if seen is now:
            return value
        value = fn(profile, now)
        cache[0] = (now, value)
        return value

    return memo


@dataclass(frozen=True, slots=True)
class Function:
    """A built-in: accepted argument types, result type, and the work on non-null values."""

    name: str
    accepts: tuple[str, ...]
    returns: str
    apply: Callable[[Any], object]
    constant_only: bool = False  # parses its argument, so it must be known at compile time
    usage: str = ""


# no date lies further apart than this (years 1 to 9999): a longer duration could only
# make every date it touches out of range
MAX_DAYS = 3_650_000


def _days(n: int | Decimal) -> timedelta:
    return _duration(n, 1, "days")


def _hours(n: int | Decimal) -> timedelta:
    return _duration(n, 24, "hours")


def _duration(n: int | Decimal, per_day: int, unit: str) -> timedelta:
    value = n if isinstance(n, int) else float(n)
    if abs(value) > MAX_DAYS * per_day:
        raise ValueError(f"{n} {unit} is out of range (at most {MAX_DAYS * per_day:,} {unit})")
    return timedelta(days=value) if unit == "days" else timedelta(hours=value)


def _parse_date(text: str) -> date:
    return date.fromisoformat(text)


def _parse_datetime(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


FUNCTIONS: Mapping[str, Function] = {
    f.name: f
    for f in (
        Function("days", (NUMBER,), DURATION, _days, usage="days(90)"),
        Function("hours", (NUMBER,), DURATION, _hours, usage="hours(12)"),
        Function("year", (DATE, DATETIME), NUMBER, lambda x: x.year, usage="year(now)"),
        Function("month", (DATE, DATETIME), NUMBER, lambda x: x.month, usage="month(now)"),
        Function("day", (DATE, DATETIME), NUMBER, lambda x: x.day, usage="day(birthday)"),
        Function("lower", (TEXT,), TEXT, str.lower, usage="lower(city)"),
        Function("len", (TEXT, LIST), NUMBER, len, usage="len(categories)"),
        Function(
            "date", (TEXT,), DATE, _parse_date, constant_only=True, usage='date("2024-12-31")'
        ),
        Function(
            "datetime",
            (TEXT,),
            DATETIME,
            _parse_datetime,
            constant_only=True,
            usage='datetime("2024-12-31T21:00:00Z")',
        ),
    )
}
