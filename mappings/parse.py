"""Reads mapping-file data (already parsed TOML) into a ``MappingSpec``, collecting issues.

Each check adds an issue under the exact TOML key at fault and keeps going, so one run
reports everything; a field with problems is left out of the spec, which is only used
when there are no issues at all.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from crmsync.fields import ProfileField
from mappings.model import (
    DEFAULT_GROUP_MAX_LENGTH,
    DEFAULT_GROUP_PREFIX,
    TYPES,
    FieldRule,
    Issues,
    MappingSpec,
    MembershipRule,
    join_key,
)
from mappings.options import (
    address_parts,
    check_choices,
    default_value,
    field_options,
    locale_option,
    profile_field,
    string_table,
)
from mappings.text import GROUP_CASES

TOP_KEYS = ("kind", "description", "locale", "identity", "fields", "memberships")
OLD_TOP_KEYS = ("tags",)  # [memberships] was first called [tags]
MEMBERSHIP_KEYS = ("prefix", "case", "max_length", "names")
_ALL_OPTIONS = frozenset().union(*(info.options for info in TYPES.values())) | {"from"}
KIND = re.compile(r"[a-z][a-z0-9_]*")  # a destination kind, as a mapping file names it
MAX_FIELD_NAME = 100


def build_spec(
    data: Mapping[str, object], fields: Mapping[str, ProfileField], issues: Issues
) -> MappingSpec:
    """The spec of every valid part of ``data``; problems go to ``issues``."""
    issues.unknown_keys(data, TOP_KEYS, "", also=OLD_TOP_KEYS)
    kind = data.get("kind")
    if not isinstance(kind, str) or not KIND.fullmatch(kind):
        issues.add(
            "kind",
            "missing or invalid" if kind is None else f"invalid kind {kind!r}",
            'name the destination kind this mapping is for, e.g. kind = "outbox"',
        )
        kind = ""
    if "description" in data and not isinstance(data["description"], str):
        issues.add("description", "expected a string")
    locale = locale_option(data.get("locale"), "locale", issues)
    email, phone = _identity(data.get("identity"), fields, issues)
    rules: list[FieldRule] = []
    table = data.get("fields", {})
    if not isinstance(table, dict):
        issues.add("fields", "expected a table of destination fields ([fields.NAME])")
    else:
        for name, raw in table.items():
            rule = _field(name, raw, fields, locale, issues)
            if rule is not None:
                rules.append(rule)
    return MappingSpec(kind, email, phone, locale, tuple(rules), _memberships(data, issues))


def _identity(
    raw: object, fields: Mapping[str, ProfileField], issues: Issues
) -> tuple[str | None, str | None]:
    hint = 'name the profile field that identifies a person, e.g. email = "email"'
    if raw is None:
        issues.add("identity", "missing", hint)
        return None, None
    if not isinstance(raw, dict):
        issues.add("identity", "expected a table", hint)
        return None, None
    issues.unknown_keys(raw, ("email", "phone"), "identity")
    found: dict[str, str | None] = {"email": None, "phone": None}
    for key in found:
        if key in raw:
            known = profile_field(raw[key], f"identity.{key}", fields, issues)
            if known is not None and known.type != "text":
                issues.add(f"identity.{key}", f"{known.name!r} is not a text field")
            elif known is not None:
                found[key] = known.name
    if not ({"email", "phone"} & set(raw)):
        issues.add("identity", "names neither email nor phone", hint)
    return found["email"], found["phone"]


def _field(
    name: str,
    raw: object,
    fields: Mapping[str, ProfileField],
    locale: str | None,
    issues: Issues,
) -> FieldRule | None:
    at = join_key("fields", name)
    before = len(issues.items)
    if not name.strip() or len(name) > MAX_FIELD_NAME or not name.isprintable():
        issues.add(at, f"field name must be 1-{MAX_FIELD_NAME} printable characters")
    if not isinstance(raw, dict):
        issues.add(at, 'expected a table, e.g. [fields.NAME] with from = "..." and type = "..."')
        return None
    type_ = raw.get("type", "text")
    if not isinstance(type_, str) or type_ not in TYPES:
        close = difflib.get_close_matches(str(type_), list(TYPES), n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        issues.add(
            f"{at}.type", f"unknown type {type_!r}{guess}", f"use one of: {', '.join(TYPES)}"
        )
        if "from" in raw:  # still report a wrong profile field name in the same pass
            profile_field(raw["from"], f"{at}.from", fields, issues)
        return None
    info = TYPES[type_]
    allowed = (
        {"type", "label", "default"} | info.options | ({"from"} if type_ != "address" else set())
    )
    for key in raw:
        if key not in allowed and key in _ALL_OPTIONS:
            users = sorted(
                t
                for t, i in TYPES.items()
                if key in i.options or (key == "from" and t != "address")
            )
            issues.add(
                f"{at}.{key}",
                f"does not apply to type {type_!r}",
                f"it applies to: {', '.join(users)}",
            )
    issues.unknown_keys({k: v for k, v in raw.items() if k not in _ALL_OPTIONS}, allowed, at)

    source: str | None = None
    source_type: str | None = None
    parts: tuple[tuple[str, str], ...] = ()
    require: tuple[str, ...] = ()
    if type_ == "address":
        parts, require = address_parts(raw, at, fields, issues)
    elif "from" not in raw:
        issues.add(f"{at}.from", "missing", 'name the profile field to read, e.g. from = "city"')
    else:
        found = profile_field(raw["from"], f"{at}.from", fields, issues)
        if found is not None:
            source, source_type = found.name, found.type
            if found.type not in info.sources:
                issues.add(
                    f"{at}.from",
                    f"type {type_!r} cannot take profile field {found.name!r} ({found.type})",
                    f"it takes {', '.join(sorted(info.sources))} fields",
                )
    options = field_options(raw, at, type_, source_type, locale, issues)
    label = raw.get("label", name)
    if not isinstance(label, str) or not label.strip():
        issues.add(f"{at}.label", "expected a non-empty string")
    default = default_value(raw, at, type_, issues)
    if type_ == "dropdown":
        check_choices(options, default, at, issues)
    if len(issues.items) > before:
        return None
    return FieldRule(
        name=name,
        type=type_,
        source=source,
        source_type=source_type,
        label=str(label),
        default=default,
        parts=parts,
        require=require,
        **options,
    )


def _memberships(data: Mapping[str, object], issues: Issues) -> MembershipRule:
    """The ``[memberships]`` table (``[tags]``, its first name, is still read)."""
    if "memberships" in data and "tags" in data:
        issues.add("tags", "both [memberships] and [tags] are given", "keep [memberships] only")
    at = "tags" if "tags" in data and "memberships" not in data else "memberships"
    raw = data.get(at)
    if raw is None:
        return MembershipRule()
    if not isinstance(raw, dict):
        issues.add(at, "expected a table")
        return MembershipRule()
    issues.unknown_keys(raw, MEMBERSHIP_KEYS, at)
    prefix = raw.get("prefix", DEFAULT_GROUP_PREFIX)
    if not isinstance(prefix, str) or not prefix.strip() or prefix != prefix.lstrip():
        issues.add(
            f"{at}.prefix",
            f"expected a non-empty prefix, got {prefix!r}",
            "crmsync adds and removes only groups with this prefix, so it cannot be empty",
        )
        prefix = DEFAULT_GROUP_PREFIX
    case = raw.get("case", "kebab")
    if case not in GROUP_CASES:
        issues.add(f"{at}.case", f"unknown case {case!r}", f"use {', '.join(GROUP_CASES)}")
        case = "kebab"
    max_length = raw.get("max_length", DEFAULT_GROUP_MAX_LENGTH)
    shortest = len(prefix) + 10
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < shortest:
        issues.add(
            f"{at}.max_length",
            f"expected a whole number of at least {shortest}, got {max_length!r}",
            "room for the prefix, a short name and the 9-character suffix of cut names",
        )
        max_length = DEFAULT_GROUP_MAX_LENGTH
    names = string_table(raw.get("names", {}), f"{at}.names", issues)
    for segment, group in names.items():
        if not group.strip():
            issues.add(join_key(f"{at}.names", segment), "expected a non-empty group name")
        elif group.startswith(prefix):
            issues.add(
                join_key(f"{at}.names", segment),
                f"{group!r} already starts with the prefix {prefix!r}",
                "give the name without the prefix; crmsync adds it",
            )
    return MembershipRule(prefix=prefix, case=str(case), max_length=max_length, names=names)
