"""The checks of one field's options, each reporting under its exact TOML key.

Used by ``parse``; every function adds issues and returns what it could read, so one
pass finds every problem of a field.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from crmsync.fields import ProfileField
from mappings.model import ADDRESS_PARTS, MAX_ROUND, NO_DEFAULT, TYPES, Issues, join_key
from mappings.text import CASES

CATALOGUE_HINT = "profile fields are listed by `crmsync fields`"
# strftime directives whose output does not depend on the process locale or platform
_STABLE_DIRECTIVES = frozenset("YmdHMSyjzfIFTGVuwZ%")


def profile_field(
    value: object, key: str, fields: Mapping[str, ProfileField], issues: Issues
) -> ProfileField | None:
    if not isinstance(value, str):
        issues.add(key, f"expected a profile field name, got {value!r}", CATALOGUE_HINT)
        return None
    found = fields.get(value)
    if found is None:
        close = difflib.get_close_matches(value, list(fields), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        issues.add(key, f"unknown profile field {value!r}{guess}", CATALOGUE_HINT)
    return found


class Options(TypedDict, total=False):
    """The per-type options of a field, as FieldRule takes them."""

    case: str | None
    locale: str | None
    max_length: int | None
    overflow: str
    value_map: Mapping[str, str]
    unmapped: str | None
    choices: tuple[str, ...]
    format: str | None
    timezone: str | None
    round: int | None
    join: str


def field_options(
    raw: Mapping[str, object],
    at: str,
    type_: str,
    source_type: str | None,
    locale: str | None,
    issues: Issues,
) -> Options:
    allowed = TYPES[type_].options
    out: Options = {"locale": locale}

    def present(key: str) -> bool:
        return key in raw and key in allowed

    def only_for(key: str, sources: set[str], what: str) -> None:
        if type_ == "text" and source_type is not None and source_type not in sources:
            issues.add(f"{at}.{key}", f"applies only to {what} profile fields, not {source_type}")

    if present("case"):
        if raw["case"] in CASES:
            out["case"] = str(raw["case"])
        else:
            issues.add(f"{at}.case", f"unknown case {raw['case']!r}", f"use {', '.join(CASES)}")
    if present("locale"):
        out["locale"] = locale_option(raw["locale"], f"{at}.locale", issues)
    if present("max_length"):
        out["max_length"] = _positive_int(raw["max_length"], f"{at}.max_length", issues)
    if present("overflow"):
        if raw["overflow"] in ("truncate", "default"):
            out["overflow"] = str(raw["overflow"])
        else:
            issues.add(f"{at}.overflow", "expected 'truncate' or 'default'")
    if present("map"):
        out["value_map"] = string_table(raw["map"], f"{at}.map", issues)
    if present("unmapped"):
        if isinstance(raw["unmapped"], str):
            out["unmapped"] = raw["unmapped"]
        else:
            issues.add(f"{at}.unmapped", "expected a string")
    if present("choices"):
        out["choices"] = _choices(raw["choices"], f"{at}.choices", issues)
    if present("format"):
        out["format"] = _format(raw["format"], f"{at}.format", issues)
        only_for("format", {"date", "datetime"}, "date and datetime")
    if present("timezone"):
        out["timezone"] = _timezone(raw["timezone"], f"{at}.timezone", issues)
        if source_type == "date" and type_ != "text":  # only_for covers text fields
            issues.add(f"{at}.timezone", "applies only to datetime profile fields, not date")
        only_for("timezone", {"datetime"}, "datetime")
    if present("round"):
        value = raw["round"]
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ROUND:
            out["round"] = value
        else:
            issues.add(f"{at}.round", f"expected a whole number of decimals from 0 to {MAX_ROUND}")
        only_for("round", {"integer", "decimal"}, "integer and decimal")
    if present("join"):
        if isinstance(raw["join"], str):
            out["join"] = raw["join"]
        else:
            issues.add(f"{at}.join", "expected a string")
        only_for("join", {"list"}, "list")
    return out


def _positive_int(value: object, key: str, issues: Issues) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    issues.add(key, f"expected a positive whole number, got {value!r}")
    return None


def string_table(value: object, key: str, issues: Issues) -> dict[str, str]:
    if not isinstance(value, dict):
        issues.add(key, "expected a table of value = replacement strings")
        return {}
    for k, v in value.items():
        if not isinstance(v, str):
            issues.add(join_key(key, k), f"expected a string, got {v!r}")
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _choices(value: object, key: str, issues: Issues) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        issues.add(key, "expected a non-empty list of strings")
        return ()
    bad = [v for v in value if not isinstance(v, str) or not v]
    if bad:
        issues.add(key, f"every choice must be a non-empty string, not {bad[0]!r}")
    if len(set(map(str, value))) != len(value):
        issues.add(key, "choices must not repeat")
    return tuple(v for v in value if isinstance(v, str) and v)


def _format(value: object, key: str, issues: Issues) -> str | None:
    """A strftime format using only directives whose output is stable across machines."""
    if not isinstance(value, str) or "%" not in value:
        issues.add(key, 'expected a strftime format such as "%Y-%m-%d"')
        return None
    for match in re.finditer(r"%(.?)", value):
        directive = match.group(1)
        if directive not in _STABLE_DIRECTIVES:
            issues.add(
                key,
                f"directive %{directive} is locale- or platform-dependent or unknown",
                "use numeric directives: %Y %m %d %H %M %S %z (and %F, %T, %j, %y, %f)",
            )
            return None
    return value


def _timezone(value: object, key: str, issues: Issues) -> str | None:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return value
    issues.add(key, f"unknown time zone {value!r}", 'use an IANA name such as "Europe/Istanbul"')
    return None


def locale_option(value: object, key: str, issues: Issues) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            pass
        else:
            return value
    issues.add(key, f"unknown locale {value!r}", 'use a language code such as "tr" or "en"')
    return None


_DEFAULT_TYPES: Mapping[str, tuple[tuple[type, ...], str]] = {
    "number": ((int, float), "a number"),
    "integer": ((int,), "a whole number"),
    "boolean": ((bool,), "true or false"),
    "list": ((list,), "a list of strings"),
    "address": ((dict,), "a table of address parts"),
}


def default_value(raw: Mapping[str, object], at: str, type_: str, issues: Issues) -> object:
    """The literal output for null values; "" (clear the field) suits every type."""
    if "default" not in raw:
        return NO_DEFAULT
    value = raw["default"]
    if value == "" and isinstance(value, str):
        return value
    accepted, words = _DEFAULT_TYPES.get(type_, ((str,), "a string"))
    ok = isinstance(value, accepted) and (type_ == "boolean" or not isinstance(value, bool))
    if ok and isinstance(value, list):
        ok = all(isinstance(item, str) for item in value)
    if ok and isinstance(value, dict):
        ok = set(value) <= set(ADDRESS_PARTS) and all(isinstance(v, str) for v in value.values())
    if not ok:
        issues.add(f"{at}.default", f'expected {words} or "", got {value!r}')
        return NO_DEFAULT
    return value


def check_choices(options: Options, default: object, at: str, issues: Issues) -> None:
    choices = options.get("choices") or ()
    if not choices:
        return
    for original, value in (options.get("value_map") or {}).items():
        if value and value not in choices:
            issues.add(join_key(f"{at}.map", original), f"{value!r} is not one of the choices")
    unmapped = options.get("unmapped")
    if unmapped and unmapped not in choices:
        issues.add(f"{at}.unmapped", f"{unmapped!r} is not one of the choices")
    if isinstance(default, str) and default and default not in choices:
        issues.add(f"{at}.default", f"{default!r} is not one of the choices")


def address_parts(
    raw: Mapping[str, object], at: str, fields: Mapping[str, ProfileField], issues: Issues
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    table = raw.get("from_fields")
    key = f"{at}.from_fields"
    if not isinstance(table, dict) or not table:
        issues.add(
            key,
            "expected a table of address part = profile field",
            "parts: " + ", ".join(ADDRESS_PARTS),
        )
        return (), ()
    issues.unknown_keys(table, ADDRESS_PARTS, key)
    parts: list[tuple[str, str]] = []
    for part in ADDRESS_PARTS:
        if part in table:
            found = profile_field(table[part], f"{key}.{part}", fields, issues)
            if found is not None and found.type != "text":
                issues.add(f"{key}.{part}", f"{found.name!r} is not a text field")
            elif found is not None:
                parts.append((part, found.name))
    require_raw = raw.get("require", [])
    if not isinstance(require_raw, list) or not all(isinstance(p, str) for p in require_raw):
        issues.add(f"{at}.require", "expected a list of address parts")
        return tuple(parts), ()
    for part in require_raw:
        if part not in table:
            issues.add(f"{at}.require", f"{part!r} is required but not in from_fields")
    return tuple(parts), tuple(require_raw)
