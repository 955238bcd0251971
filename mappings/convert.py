"""Decides, once per mapping, how one profile value becomes one output value.

Every decision (which conversion, which format, which case rules, which limit) is taken
here at load time, as a ``FieldPlan`` that ``compose`` writes into the mapping's apply
function, or as a closure (``compile_field``) for the few fields a plan cannot express;
the steps only do the work. Outputs are JSON values chosen to be
stable: the same profile always gives an equal value, so payload hashes only change when
the data does (numbers are rounded half-up from the exact ``Decimal``; see the README).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from mappings.model import DEFAULT_FORMATS, NO_DEFAULT, FieldRule
from mappings.text import case_function

Profile = Mapping[str, object]
Getter = Callable[[Profile], object]
Step = Callable[[Any], Any]

CACHE_SIZE = 20_000  # distinct values remembered per cached step (bounded memory)
_DAY_DIRECTIVES = frozenset("YmdyjFGVuw%")
NULL: Any = object()  # a step's way to say "use the null value" (overflow, invalid choice)
_BOOL_TEXT = {True: "true", False: "false"}


def _is_true(value: object) -> bool:
    return value is True


# steps the composed apply function writes as an expression of ``v`` instead of a call
INLINE: Mapping[Step, str] = {_is_true: "v is True", list: "list(v)"}


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One field as ``compose`` writes it into the mapping's apply function.

    The output is ``null`` (or ``null_factory()``) when the profile value is None,
    otherwise ``convert(value)``; ``convert`` None means the profile value is the output.
    """

    source: str
    null: object
    null_factory: Callable[[], object] | None
    convert: Step | None


def plan_field(rule: FieldRule) -> FieldPlan | None:
    """The field as a plan, or None where only its closure (``compile_field``) will do:
    addresses, and steps that can turn a value into the null value after converting it."""
    if rule.type == "address" or rule.source is None:
        return None
    if rule.type == "dropdown" or (rule.max_length is not None and rule.overflow == "default"):
        return None
    default = None if rule.default is NO_DEFAULT else rule.default
    factory = _null_value(rule) if isinstance(default, dict | list) else None
    steps = _steps(rule)
    convert = _chain(steps) if steps else None
    return FieldPlan(rule.source, default, factory, convert)


def compile_field(rule: FieldRule) -> Getter:
    """profile -> this field's output value, or its default when the value is null."""
    null = _null_value(rule)
    if rule.type == "address":
        return _address(rule, null)
    convert = _chain(_steps(rule))
    name = rule.source
    if name is None:  # parse gives every non-address field a source; this is a bug
        raise ValueError(f"field {rule.name!r} has no profile field to read")

    def get(profile: Profile) -> object:
        value = profile.get(name)
        if value is None:
            return null()
        out = convert(value)
        return null() if out is NULL else out

    return get


def _null_value(rule: FieldRule) -> Callable[[], object]:
    default = None if rule.default is NO_DEFAULT else rule.default
    if isinstance(default, dict):
        return lambda: dict(default)  # a fresh copy: callers may change what they get
    if isinstance(default, list):
        return lambda: list(default)
    return lambda: default


def _chain(steps: list[Step]) -> Step:
    if not steps:
        return lambda value: value
    if len(steps) == 1:
        return steps[0]
    first, rest = steps[0], _chain(steps[1:])
    return lambda value: NULL if (out := first(value)) is NULL else rest(out)


def _zone(rule: FieldRule) -> tzinfo:
    return ZoneInfo(rule.timezone) if rule.timezone else UTC


def _steps(rule: FieldRule) -> list[Step]:
    kind = rule.type
    if kind == "text":
        first = _to_text(rule)  # None: the profile value is text already
        return [*([first] if first is not None else []), *_text_steps(rule)]
    if kind == "number":
        return [_to_number(rule)]
    if kind == "integer":
        if rule.source_type == "decimal":
            return [lambda v: int(v.quantize(Decimal(1), ROUND_HALF_UP))]
        return []  # the profile holds an int
    if kind in ("date", "datetime", "birthday"):
        return [_to_time_text(rule)]
    if kind == "boolean":
        return [_is_true]
    if kind == "phone":
        return []  # profile phones are E.164 text
    if kind == "list":
        return [list]
    return [_to_choice(rule)]  # dropdown


def _to_text(rule: FieldRule) -> Step | None:
    source = rule.source_type
    if source == "text":
        return None
    if source == "integer":
        return (
            str if rule.round is None else lambda v: format(_rounded(Decimal(v), rule.round), "f")
        )
    if source == "decimal":
        if rule.round is None:
            return lambda v: format(v, "f")  # never "1E+3"
        return lambda v: format(_rounded(v, rule.round), "f")
    if source == "boolean":
        return _BOOL_TEXT.__getitem__
    if source == "list":
        separator = rule.join
        return separator.join
    return _to_time_text(rule)


def _rounded(value: Decimal, places: int | None) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-(places or 0)), ROUND_HALF_UP)


def _to_number(rule: FieldRule) -> Step:
    """integer fields -> int; decimals rounded half-up to ``round`` places (default 2).

    ``round = 0`` gives an int, otherwise a float (the shortest repr of the rounded
    Decimal, so 1234.5 serialises as 1234.5). -0.0 becomes 0.0.
    """
    places = rule.round if rule.round is not None else (2 if rule.source_type == "decimal" else 0)
    if places == 0:
        if rule.source_type == "integer":
            return int
        return lambda v: int(v.quantize(Decimal(1), ROUND_HALF_UP))
    step = Decimal(1).scaleb(-places)
    if rule.source_type == "integer":
        return lambda v: float(Decimal(v).quantize(step, ROUND_HALF_UP)) + 0.0
    return lambda v: float(v.quantize(step, ROUND_HALF_UP)) + 0.0


def _to_time_text(rule: FieldRule) -> Step:
    """date/datetime -> text in ``format`` (ISO 8601 by default), datetimes in ``timezone``.

    Formats that show only the calendar day are cached per day: strftime costs
    microseconds, and a million profiles share a few thousand distinct days.
    """
    fmt = rule.format or DEFAULT_FORMATS.get(rule.type)
    zone = _zone(rule)

    def local(value: datetime) -> datetime:
        return value if value.tzinfo is zone else value.astimezone(zone)

    if fmt is None:
        return _iso_seconds(zone)
    if fmt == "%Y-%m-%d":  # the usual date format is ISO 8601's, and isoformat() is cheap
        return lambda v: (local(v).date() if isinstance(v, datetime) else v).isoformat()
    if not set(re.findall(r"%(.)", fmt)) <= _DAY_DIRECTIVES:
        return lambda v: (local(v) if isinstance(v, datetime) else v).strftime(fmt)
    day_text = lru_cache(maxsize=CACHE_SIZE)(lambda day: day.strftime(fmt))
    return lambda v: day_text(local(v).date() if isinstance(v, datetime) else v)


def _iso_seconds(zone: tzinfo) -> Step:
    """ISO 8601 to the second; ``isoformat()`` is that already when there are no
    microseconds (most source times), and is much cheaper than ``timespec=``."""

    def iso(value: date) -> str:
        if not isinstance(value, datetime):
            return value.isoformat()
        if value.tzinfo is not zone:
            value = value.astimezone(zone)
        if value.microsecond:
            return value.isoformat(timespec="seconds")
        return value.isoformat()

    return iso


def _text_steps(rule: FieldRule) -> list[Step]:
    steps: list[Step] = []
    if rule.value_map or rule.unmapped is not None:
        table, unmapped = dict(rule.value_map), rule.unmapped
        if unmapped is None:
            steps.append(lambda s: table.get(s, s))
        else:
            steps.append(lambda s: table.get(s, unmapped))
    if rule.case:
        # names and cities repeat across a store's customers: remember recent results
        steps.append(lru_cache(maxsize=CACHE_SIZE)(case_function(rule.case, rule.locale)))
    if rule.max_length is not None:
        limit = rule.max_length
        if rule.overflow == "default":
            steps.append(lambda s: NULL if len(s) > limit else s)
        else:
            steps.append(lambda s: s[:limit])
    return steps


def _to_choice(rule: FieldRule) -> Step:
    """Mapped value, else ``unmapped``, else the value; not a choice -> the null value."""
    table = dict(rule.value_map)
    unmapped = rule.unmapped
    choices = frozenset(rule.choices)
    as_text: Step = _BOOL_TEXT.__getitem__ if rule.source_type == "boolean" else str

    def choose(value: object) -> object:
        text = as_text(value)
        out = table.get(text, text if unmapped is None else unmapped)
        return NULL if choices and out not in choices else out

    return choose


def _address(rule: FieldRule, null: Callable[[], object]) -> Getter:
    """A dict of the mapped parts ("" for missing ones); null when empty or incomplete."""
    parts = tuple((part, source, part in rule.require) for part, source in rule.parts)

    def get(profile: Profile) -> object:
        out: dict[str, object] = {}
        empty = True
        for part, source, required in parts:
            value = profile.get(source)
            if value is None or value == "":
                if required:
                    return null()
                out[part] = ""
            else:
                out[part] = value
                empty = False
        return null() if empty else out

    return get
