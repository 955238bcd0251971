"""The validated shape of a mapping file, and the error that lists everything wrong with one.

``parse`` turns TOML data into these frozen specs, ``limits`` adds the checks of one
destination kind, and ``apply`` compiles a spec into code. Keeping the spec apart
from the code lets every check run before any code is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from crmsync.errors import ConfigError, ConfigIssue


class _NoDefault:
    """The one "no default given" value; pickles as itself (specs go to worker processes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no default>"

    def __reduce__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: object = _NoDefault()
ADDRESS_PARTS = ("addr1", "addr2", "city", "state", "zip", "country")
DEFAULT_GROUP_PREFIX = "crm-"
DEFAULT_GROUP_MAX_LENGTH = 100
MAX_ROUND = 10


@dataclass(frozen=True, slots=True)
class TypeInfo:
    sources: frozenset[str]  # catalogue types this mapping type accepts
    options: frozenset[str]  # keys allowed besides type/from/label/default


_ANY = frozenset({"text", "integer", "decimal", "boolean", "date", "datetime", "list"})
TYPES: Mapping[str, TypeInfo] = {
    "text": TypeInfo(
        _ANY,
        frozenset(
            {"case", "locale", "max_length", "overflow", "map", "unmapped", "format"}
            | {"timezone", "round", "join"}
        ),
    ),
    "number": TypeInfo(frozenset({"integer", "decimal"}), frozenset({"round"})),
    "integer": TypeInfo(frozenset({"integer", "decimal"}), frozenset()),
    "date": TypeInfo(frozenset({"date", "datetime"}), frozenset({"format", "timezone"})),
    "datetime": TypeInfo(frozenset({"datetime"}), frozenset({"format", "timezone"})),
    "birthday": TypeInfo(frozenset({"date", "datetime"}), frozenset({"format"})),
    "boolean": TypeInfo(frozenset({"boolean"}), frozenset()),
    "phone": TypeInfo(frozenset({"text"}), frozenset()),
    "address": TypeInfo(frozenset({"text"}), frozenset({"from_fields", "require"})),
    "dropdown": TypeInfo(
        frozenset({"text", "integer", "boolean"}), frozenset({"map", "unmapped", "choices"})
    ),
    "list": TypeInfo(frozenset({"list"}), frozenset()),
}
DEFAULT_FORMATS = {"date": "%Y-%m-%d", "birthday": "%m/%d"}


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One destination field, validated; ``convert`` decides how it is computed."""

    name: str
    type: str
    source: str | None  # the profile field (None for address)
    source_type: str | None  # its catalogue type
    label: str
    default: object = NO_DEFAULT
    case: str | None = None
    locale: str | None = None
    max_length: int | None = None
    overflow: str = "truncate"
    value_map: Mapping[str, str] = field(default_factory=dict)
    unmapped: str | None = None
    choices: tuple[str, ...] = ()
    format: str | None = None
    timezone: str | None = None
    round: int | None = None
    join: str = ", "
    parts: tuple[tuple[str, str], ...] = ()  # address: (part, profile field), in part order
    require: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MembershipRule:
    """How segment names become the destination's group names (tags, lists)."""

    prefix: str = DEFAULT_GROUP_PREFIX
    case: str = "kebab"
    max_length: int = DEFAULT_GROUP_MAX_LENGTH
    names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MappingSpec:
    kind: str
    identity_email: str | None
    identity_phone: str | None
    locale: str | None
    fields: tuple[FieldRule, ...]
    memberships: MembershipRule


class MappingError(ConfigError):
    """A mapping file is unusable; ``issues`` lists every problem with its TOML key path."""

    def __init__(self, issues: Sequence[ConfigIssue] | str, *, path: str = "", key: str = ""):
        super().__init__(issues, key=key)
        self.path = path

    def __str__(self) -> str:
        body = super().__str__()
        return f"mapping file {self.path}:\n{body}" if self.path else body


class Issues:
    """Collects every problem found, each under its TOML key path."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, key: str, message: str, hint: str = "") -> None:
        self.items.append(ConfigIssue(key=key, message=message, hint=hint))

    def unknown_keys(
        self,
        table: Mapping[str, object],
        allowed: Iterable[str],
        at: str,
        also: Iterable[str] = (),
    ) -> None:
        """Reports keys of ``table`` that are not ``allowed`` (nor ``also``: old names still
        read but not advertised)."""
        known = sorted(allowed)
        accepted = {*known, *also}
        for key in table:
            if key not in accepted:
                close = difflib.get_close_matches(key, known, n=2)
                guess = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                self.add(join_key(at, key), f"unknown key{guess}", f"allowed: {', '.join(known)}")


def join_key(at: str, key: str) -> str:
    """``fields.FNAME`` for plain keys, ``fields."odd key"`` otherwise, as TOML writes them."""
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'
    return f"{at}.{shown}" if at else shown
