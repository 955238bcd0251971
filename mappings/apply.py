"""``CompiledMapping``: a loaded mapping, ready to turn profiles into destination payloads.

Everything is decided when the mapping loads; ``apply`` is one generated function
(``compose``) with no I/O and no look-ups in the configuration, and ``membership_for``
caches each segment's group name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from crmsync.contract import FieldSpec
from crmsync.errors import RecordError
from mappings.compose import compose
from mappings.convert import compile_field
from mappings.model import FieldRule, MappingSpec
from mappings.text import group_namer

_CONVERSION_ERRORS = (TypeError, ValueError, AttributeError, ArithmeticError, KeyError)


class CompiledMapping:
    """Profile -> destination fields, and segment names -> group names, for one destination."""

    __slots__ = (
        "_apply",
        "_groups",
        "_namer",
        "_specs",
        "identity_email",
        "identity_phone",
        "kind",
        "path",
        "prefix",
        "profile_fields_used",
        "rules",
        "spec",
    )

    def __init__(self, spec: MappingSpec, *, path: str = "") -> None:
        self.spec = spec
        self.kind = spec.kind
        self.path = path
        self.identity_email: str | None = spec.identity_email
        self.identity_phone: str | None = spec.identity_phone
        rules = sorted(spec.fields, key=lambda rule: rule.name)
        self.rules: tuple[FieldRule, ...] = tuple(rules)
        self._apply = compose(rules, name=f"mapping {spec.kind} {path}".strip())
        self._specs = tuple(
            FieldSpec(name=rule.name, type=rule.type, label=rule.label, choices=rule.choices)
            for rule in rules
        )
        read = {rule.source for rule in rules if rule.source}
        read |= {source for rule in rules for _, source in rule.parts}
        read |= {f for f in (spec.identity_email, spec.identity_phone) if f}
        self.profile_fields_used: frozenset[str] = frozenset(read)
        groups = spec.memberships
        self.prefix = groups.prefix  # the one prefix of the groups crmsync owns there
        self._namer = group_namer(
            groups.prefix, groups.case, groups.max_length, groups.names, spec.locale
        )
        self._groups: dict[str, str] = {}

    def apply(self, profile: Mapping[str, object]) -> dict[str, object]:
        """The destination fields for ``profile``, keys sorted; pure and deterministic.

        A profile value of the wrong type (a bug upstream) raises RecordError naming
        the destination field, so the one record is quarantined.
        """
        try:
            return self._apply(profile)
        except _CONVERSION_ERRORS as exc:
            raise self._which_failed(profile) from exc

    def _which_failed(self, profile: Mapping[str, object]) -> RecordError:
        for rule in self.rules:  # rare: rebuild the closures to find the failing field
            try:
                compile_field(rule)(profile)
            except _CONVERSION_ERRORS as exc:
                return RecordError(f"cannot map the profile value: {exc}", field=rule.name)
        return RecordError("cannot map the profile")

    def field_specs(self) -> list[FieldSpec]:
        """The destination fields, sorted by name; ``type`` is the mapping type.

        Each destination translates the type to its own.
        """
        return list(self._specs)

    def membership_for(self, segment: str) -> str:
        group = self._groups.get(segment)
        if group is None:
            group = self._groups[segment] = self._namer(segment)
        return group

    def memberships_for(self, segments: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted({self.membership_for(segment) for segment in segments}))

    def owns(self, group: str) -> bool:
        """True for groups crmsync manages here (they carry the prefix); it never touches
        others."""
        return group.startswith(self.prefix)

    def __reduce__(self) -> tuple[Callable[..., CompiledMapping], tuple[MappingSpec, str]]:
        """Pickles as its validated spec: a worker process compiles exactly what the run
        loaded, whatever has happened to the file since."""
        return (_compiled, (self.spec, self.path))

    def __repr__(self) -> str:
        return f"CompiledMapping(kind={self.kind!r}, fields={[rule.name for rule in self.rules]})"


def _compiled(spec: MappingSpec, path: str) -> CompiledMapping:
    return CompiledMapping(spec, path=path)
