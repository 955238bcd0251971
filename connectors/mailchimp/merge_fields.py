"""Merge fields: which Mailchimp type a mapped field needs, and how its values are sent.

Pure functions. ``plan`` compares what the mapping needs with what the audience has and
returns the fields to create (and dropdowns whose choices must grow), or raises
``ConfigError`` naming every conflict at once, so the operator fixes them in one go.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from connectors.mailchimp.mapping_rules import (
    MAILCHIMP_MERGE_TAG,
    MAILCHIMP_MERGE_TYPES,
    MAILCHIMP_RESERVED_TAGS,
)
from crmsync.contract import FieldSpec
from crmsync.errors import ConfigError, ConfigIssue

# Mailchimp's rules for merge tags and types live with the mapping checks (mapping_rules):
# a mapping that loaded is one these plans can carry out.

# Existing field types that can hold what a mapping type sends without losing anything.
ACCEPTS: Mapping[str, frozenset[str]] = {
    "text": frozenset({"text"}),
    "number": frozenset({"number"}),
    "date": frozenset({"date"}),
    "birthday": frozenset({"birthday"}),
    "phone": frozenset({"phone", "text"}),
    "address": frozenset({"address"}),
    "dropdown": frozenset({"dropdown", "radio"}),
}


@dataclass(frozen=True, slots=True)
class ExistingField:
    merge_id: int
    tag: str
    type: str
    name: str = ""
    choices: tuple[str, ...] = ()

    def grown(self, choices: Sequence[str]) -> dict[str, Any]:
        """PATCH body that sets this dropdown's choices (Mailchimp requires the name)."""
        return {"name": self.name or self.tag, "options": {"choices": list(choices)}}


@dataclass(frozen=True, slots=True)
class MergeFieldPlan:
    create: tuple[dict[str, Any], ...] = ()  # bodies for POST /lists/{id}/merge-fields
    grow_choices: tuple[tuple[ExistingField, tuple[str, ...]], ...] = ()  # field, all choices
    types: Mapping[str, str] = field(default_factory=dict)  # tag -> Mailchimp type


def create_body(spec: FieldSpec, mc_type: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tag": spec.name,
        "name": (spec.label or spec.name)[:100],
        "type": mc_type,
        "required": False,
        "public": False,
    }
    if mc_type == "dropdown":
        body["options"] = {"choices": list(spec.choices)}
    elif mc_type == "phone":
        body["options"] = {"phone_format": "international"}  # crmsync phones are E.164
    return body


def plan(
    wanted: Sequence[FieldSpec], existing: Iterable[ExistingField], limit: int
) -> MergeFieldPlan:
    """Fields to create or extend so the mapping fits; ConfigError listing every conflict."""
    have = {f.tag: f for f in existing}
    issues: list[ConfigIssue] = []
    create: list[dict[str, Any]] = []
    grow: list[tuple[ExistingField, tuple[str, ...]]] = []
    types: dict[str, str] = {}
    for spec in wanted:
        key = f"mapping.{spec.name}"
        if spec.name in MAILCHIMP_RESERVED_TAGS or not MAILCHIMP_MERGE_TAG.fullmatch(spec.name):
            issues.append(
                ConfigIssue(
                    key,
                    f"{spec.name!r} is not a usable Mailchimp merge tag",
                    "use 1-10 characters A-Z, 0-9 or _, and not EMAIL",
                )
            )
            continue
        if spec.type not in MAILCHIMP_MERGE_TYPES:
            issues.append(
                ConfigIssue(
                    key, f"unknown type {spec.type!r}", f"one of {', '.join(MAILCHIMP_MERGE_TYPES)}"
                )
            )
            continue
        wanted_type = MAILCHIMP_MERGE_TYPES[spec.type]
        found = have.get(spec.name)
        if found is None:
            create.append(create_body(spec, wanted_type))
            types[spec.name] = wanted_type
            continue
        if found.type not in ACCEPTS[wanted_type]:
            issues.append(
                ConfigIssue(
                    key,
                    f"merge field {spec.name} is of type {found.type!r} in Mailchimp, but the "
                    f"mapping sends {spec.type!r} (needs Mailchimp type {wanted_type!r})",
                    "change the field's type in the mapping, or rename the merge tag",
                )
            )
            continue
        types[spec.name] = found.type
        missing = tuple(c for c in spec.choices if c not in found.choices)
        if found.type in ("dropdown", "radio") and missing:
            grow.append((found, found.choices + missing))
    if len(have) + len(create) > limit:
        names = ", ".join(str(body["tag"]) for body in create)
        issues.append(
            ConfigIssue(
                "mapping",
                f"the audience has {len(have)} merge fields and the mapping needs {len(create)} "
                f"more ({names}), over the limit of {limit}",
                "remove unused merge fields in Mailchimp or map fewer fields "
                "(merge_field_limit is 80 on Premium plans)",
            )
        )
    if issues:
        raise ConfigError(issues)
    return MergeFieldPlan(create=tuple(create), grow_choices=tuple(grow), types=types)


def existing_field(item: Mapping[str, Any]) -> ExistingField:
    options = item.get("options") or {}
    choices = options.get("choices") or ()
    return ExistingField(
        merge_id=int(item.get("merge_id", 0)),
        tag=str(item.get("tag", "")),
        type=str(item.get("type", "")),
        name=str(item.get("name", "")),
        choices=tuple(str(c) for c in choices),
    )


def encode(value: Any, mc_type: str | None) -> Any:
    """A mapped value as Mailchimp takes it for a field of ``mc_type`` (None: unknown).

    None becomes "" so a value the profile lost is cleared in Mailchimp as well, and so
    does a number that is not finite (NaN has no JSON form, and is no value either).

    Every field of every person of a push comes through here, so the value's exact type
    picks its conversion in one look-up; subclasses and containers take the general way.
    """
    convert = _BY_TYPE.get(type(value))
    if convert is not None:
        return convert(value, mc_type)
    if isinstance(value, Mapping) and mc_type == "address":
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, bool):  # before numbers: bool is an int
        return _bool(value, mc_type)
    if isinstance(value, datetime):  # before dates: a datetime is a date
        return _datetime(value, mc_type)
    if isinstance(value, date):
        return _date(value, mc_type)
    if isinstance(value, int | float | Decimal):
        return _number(value, mc_type)
    if isinstance(value, set | frozenset):
        return ", ".join(sorted(str(item) for item in value))
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def _text(value: str, mc_type: str | None) -> str:
    return value


def _none(value: None, mc_type: str | None) -> str:
    return ""


def _bool(value: bool, mc_type: str | None) -> str:
    return "true" if value else "false"


def _date(value: date, mc_type: str | None) -> str:
    if mc_type == "birthday":
        return _month_day(value)
    return value.isoformat()


def _datetime(value: datetime, mc_type: str | None) -> str:
    if mc_type == "birthday":  # the day as the value states it, as for a date
        return _month_day(value)
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    day = moment.astimezone(UTC).date()
    return day.isoformat() if mc_type in (None, "date") else moment.isoformat()


def _month_day(value: date) -> str:
    """Mailchimp's birthday, MM/DD (formatted by hand: strftime takes three times longer)."""
    return f"{value.month:02d}/{value.day:02d}"


def _number(value: int | float | Decimal, mc_type: str | None) -> int | float | str:
    if mc_type not in (None, "number"):
        return str(value)
    if isinstance(value, int):
        return value
    number = float(value)
    if not math.isfinite(number):
        return ""
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


_BY_TYPE: dict[type, Callable[[Any, str | None], Any]] = {
    str: _text,
    type(None): _none,
    bool: _bool,
    int: _number,
    float: _number,
    Decimal: _number,
    date: _date,
    datetime: _datetime,
}
