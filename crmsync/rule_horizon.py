"""When a person's segments can next change with the passage of time alone.

A run keeps, per person, the earliest instant after its ``as_of`` at which anything
time-dependent in the person's plan can change, so a later run recomputes only the
people whose instant has passed (``crmsync.incremental``). Profile fields have their own
boundaries (``profiles.ProfileBuilder``); rules add theirs through ``now`` and ``today``.

Each rule's syntax tree is read once, beside its compiled closures, and every
sub-expression that depends on the time gets one of two shapes:

- linear: a datetime or duration that moves with ``now`` (``now - days(90)``,
  ``now - last_order_at``); a comparison of it with something that does not move (or
  moves at another rate) flips at most once, at an instant solved from the two sides'
  values at ``as_of``;
- calendar: a value that changes only when a calendar unit turns over (``today``, and
  ``year``/``month``/``day`` of the time), at the next such boundary in ``now``'s zone.

Anything else that depends on the time (a shape this reading does not know) makes the
rule "may change at any moment": its people are recomputed on every run, which is
always correct, only slower. Extra instants never change a result either: they only
recompute a person who turns out unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from crmsync.fields import ProfileField
from crmsync.segments.compiler import Compiler
from crmsync.segments.parser import Binary, Call, ListLiteral, Literal, Name, Node, Unary, parse

Profile = Mapping[str, Any]
Probe = Callable[[Profile, datetime], datetime | None]  # the next instant > now, or None

_TICK = timedelta(microseconds=1)  # the resolution of ``now``
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_UNITS = ("year", "month", "day")


def _any_moment(p: Profile, now: datetime) -> datetime:
    return now + _TICK


@dataclass(frozen=True, slots=True)
class _Shape:
    """How a sub-expression depends on the time."""

    kind: str  # "const", "linear", "calendar" or "unknown"
    rate: int = 0  # linear: how the value moves per unit of ``now``
    probes: tuple[Probe, ...] = ()  # calendar and conditions: where the value may change
    dated: bool = False  # calendar: a date that is ``today`` plus a fixed duration


_CONST = _Shape("const")
_UNKNOWN = _Shape("unknown", probes=(_any_moment,))


def _next_midnight(p: Profile, now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=now.tzinfo)


def _boundary(unit: str, value: date) -> date:
    """The first day after ``value`` on which ``unit`` of the date differs."""
    if unit == "day":
        return value + timedelta(days=1)
    if unit == "month":
        return date(value.year + value.month // 12, value.month % 12 + 1, 1)
    return date(value.year + 1, 1, 1)


class _Reader:
    """Shapes of the sub-expressions of rules over one field catalogue."""

    def __init__(self, fields: Mapping[str, ProfileField]) -> None:
        self.compiler = Compiler(fields)

    def fn(self, node: Node) -> Any:
        return self.compiler.compile(node).fn

    def shape(self, node: Node) -> _Shape:
        if isinstance(node, (Literal, ListLiteral)):
            return _CONST
        if isinstance(node, Name):
            if node.name == "now":
                return _Shape("linear", 1)
            if node.name == "today":
                return _Shape("calendar", probes=(_next_midnight,), dated=True)
            return _CONST
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, Unary):
            inner = self.shape(node.operand)
            if inner.kind == "linear":
                return _Shape("linear", -inner.rate)
            return inner if node.op == "not" or inner.kind != "calendar" else _calendar(inner)
        assert isinstance(node, Binary)
        if node.op in ("and", "or"):
            return _union(self.shape(node.left), self.shape(node.right))
        left, right = self.shape(node.left), self.shape(node.right)
        if node.op in ("+", "-"):
            return self._arithmetic(node, left, right)
        if left.kind == "const" and right.kind == "const":
            return _CONST
        if node.op in _COMPARISONS and "linear" in (left.kind, right.kind):
            return self._flip(node, left, right)
        return _union(left, right)  # calendar with constants: flips only where they change

    def _call(self, node: Call) -> _Shape:
        arg = self.shape(node.args[0]) if node.args else _CONST
        if arg.kind == "const":
            return _CONST
        if node.name not in _UNITS:
            return _calendar(arg) if arg.kind == "calendar" else _UNKNOWN
        inner, unit = self.fn(node.args[0]), node.name
        if arg.kind == "linear":

            def shifted(p: Profile, now: datetime) -> datetime | None:
                value: datetime | None = inner(p, now)
                if value is None:
                    return None
                turn = datetime.combine(_boundary(unit, value.date()), time(), value.tzinfo)
                return now + (turn - value)

            return _Shape("calendar", probes=(shifted,))
        if arg.kind == "calendar" and arg.dated:

            def turned(p: Profile, now: datetime) -> datetime | None:
                value = inner(p, now)
                if value is None:
                    return None
                today = now.date()
                local = today + (_boundary(unit, value) - value)
                return datetime.combine(local, time(), tzinfo=now.tzinfo)

            return _Shape("calendar", probes=(turned,))
        return _UNKNOWN

    def _arithmetic(self, node: Binary, left: _Shape, right: _Shape) -> _Shape:
        kinds = {left.kind, right.kind}
        if kinds == {"const"}:
            return _CONST
        if "unknown" in kinds or kinds == {"linear", "calendar"}:
            return _UNKNOWN
        if "linear" in kinds:
            sign = 1 if node.op == "+" else -1
            rate = left.rate + sign * right.rate
            return _Shape("linear", rate) if rate else _CONST
        dated = (left.dated and right.kind == "const") or (
            node.op == "+" and right.dated and left.kind == "const"
        )
        shape = _union(left, right)
        return _Shape("calendar", probes=shape.probes, dated=dated)

    def _flip(self, node: Binary, left: _Shape, right: _Shape) -> _Shape:
        if "unknown" in (left.kind, right.kind) or "calendar" in (left.kind, right.kind):
            return _UNKNOWN
        rate = left.rate - right.rate
        if not rate:
            return _CONST
        a, b = self.fn(node.left), self.fn(node.right)

        def flip(p: Profile, now: datetime) -> datetime | None:
            x = a(p, now)
            if x is None:
                return None
            y = b(p, now)
            if y is None:
                return None  # null stays null: the comparison stays false
            # x - y moves by ``rate`` per unit of now: it crosses zero once
            gap: timedelta = x - y
            # (a rate of 2 or more divides, which rounds: look a tick early)
            at = now - gap * rate if rate in (1, -1) else now - gap / rate - _TICK
            if at > now:
                return at
            # crossing now (x == y): it may flip right after; crossed before: never again
            return now + _TICK if at >= now - _TICK else None

        return _Shape("calendar", probes=(flip,))


def _union(*shapes: _Shape) -> _Shape:
    if any(s.kind in ("unknown", "linear") for s in shapes):  # linear: only a comparison
        return _UNKNOWN
    probes = tuple(p for s in shapes for p in s.probes)
    return _Shape("calendar", probes=probes) if probes else _CONST


def _calendar(shape: _Shape) -> _Shape:
    return _Shape("calendar", probes=shape.probes)


class RuleHorizon:
    """The next instant at which any of a set of rules may change its answer."""

    def __init__(self, probes: Sequence[Probe]) -> None:
        self.probes = tuple(probes)

    @classmethod
    def compile(cls, rules: Mapping[str, str], fields: Mapping[str, ProfileField]) -> RuleHorizon:
        reader = _Reader(fields)
        probes: list[Probe] = []
        for text in rules.values():
            shape = reader.shape(parse(text))
            if shape.kind == "linear":  # not a condition (rules are checked elsewhere)
                shape = _UNKNOWN
            probes.extend(shape.probes)
        return cls(probes)

    def next_change(self, profile: Profile, now: datetime) -> datetime | None:
        """The earliest instant after ``now`` at which a rule may answer differently for
        ``profile`` (None: never, with the profile as it is)."""
        soonest: datetime | None = None
        for probe in self.probes:
            at = probe(profile, now)
            if at is not None and (soonest is None or at < soonest):
                soonest = at
        return soonest
