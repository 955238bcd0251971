"""Compiling one rule, or a named set of them, and evaluating a profile against the set."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime

from crmsync.fields import ProfileField
from crmsync.segments.compiler import Compiler
from crmsync.segments.errors import RuleError, SegmentErrors
from crmsync.segments.parser import parse
from crmsync.segments.values import Fn

Rule = Callable[[Mapping[str, object], datetime], bool]

# segment names become tag names at destinations: a word, then word characters or dashes
_SEGMENT_NAME = re.compile(r"\w[\w-]*")
MAX_SEGMENT_NAME = 100


def _compile(text: str, fields: Mapping[str, ProfileField]) -> tuple[Fn, frozenset[str]]:
    compiler = Compiler(fields)
    try:
        fn = compiler.condition(parse(text))
    except RuleError as exc:
        raise exc.with_context(text, tuple(fields)) from None
    except RecursionError:  # the parser's depth limit makes this a last line of defence
        error = RuleError("the rule nests too deeply; split it into simpler segments", 0)
        raise error.with_context(text, tuple(fields)) from None
    return fn, frozenset(compiler.used)


def compile_rule(text: str, fields: Mapping[str, ProfileField]) -> Rule:
    """Compile ``text`` once; call the result with (profile, now) for each profile.

    ``now`` must be timezone-aware (profile datetimes are UTC-aware). Raises RuleError.
    """
    fn, _ = _compile(text, fields)
    return fn


class SegmentSet:
    """Named, compiled rules; ``evaluate`` says which segments a profile is in."""

    __slots__ = ("_rules", "fields_used", "names", "rules")

    def __init__(
        self, compiled: Mapping[str, Fn], rules: Mapping[str, str], fields_used: frozenset[str]
    ) -> None:
        self.names: tuple[str, ...] = tuple(sorted(compiled))
        self._rules: tuple[tuple[str, Fn], ...] = tuple((n, compiled[n]) for n in self.names)
        self.rules: Mapping[str, str] = {n: rules[n] for n in self.names}
        self.fields_used = fields_used  # profile fields any rule reads

    @classmethod
    def compile(
        cls,
        rules: Mapping[str, str],
        fields: Mapping[str, ProfileField],
        *,
        key: str = "segments",
    ) -> SegmentSet:
        """Compile every rule; raise one SegmentErrors listing every bad rule and name."""
        compiled: dict[str, Fn] = {}
        used: set[str] = set()
        errors: list[tuple[str, RuleError]] = []
        for name, text in rules.items():
            if not _SEGMENT_NAME.fullmatch(name) or len(name) > MAX_SEGMENT_NAME:
                errors.append(
                    (
                        name,
                        RuleError(
                            f"segment name {name!r} must be letters, digits, '_' or '-' "
                            f"(at most {MAX_SEGMENT_NAME}, not starting with '-')",
                            0,
                        ),
                    )
                )
                continue
            if not isinstance(text, str):
                errors.append((name, RuleError("the rule must be a string", 0)))
                continue
            try:
                fn, reads = _compile(text, fields)
            except RuleError as exc:
                errors.append((name, exc))
                continue
            compiled[name] = fn
            used |= reads
        if errors:
            raise SegmentErrors(errors, key=key)
        return cls(compiled, rules, frozenset(used))

    def evaluate(self, profile: Mapping[str, object], now: datetime) -> tuple[str, ...]:
        """Sorted names of the segments ``profile`` is in, as of ``now`` (timezone-aware)."""
        if now.tzinfo is None:  # profile times are aware: comparing would raise TypeError
            raise ValueError("now must be a timezone-aware datetime")
        return tuple([name for name, rule in self._rules if rule(profile, now)])

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"SegmentSet({', '.join(self.names)})"
