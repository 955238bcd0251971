"""The binary operators of the rule language: type rules and the closures they build.

Every operator checks its operand types when the rule compiles (so evaluating a profile
never meets a type error) and keeps the null semantics described in ``crmsync.segments``:
a comparison with null is false, arithmetic on null is null.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from crmsync.segments.errors import RuleError
from crmsync.segments.parser import Binary
from crmsync.segments.values import (
    BOOLEAN,
    DATE,
    DATETIME,
    DURATION,
    LIST,
    NULL,
    NUMBER,
    TEXT,
    TYPE_WORDS,
    Compiled,
    Fn,
    constant,
    derived,
)

Profile = Mapping[str, object]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ORDERED = frozenset({NUMBER, TEXT, DATE, DATETIME, DURATION})
# (left, op, right) -> result type of + and -
_ARITHMETIC = {
    (NUMBER, "+", NUMBER): NUMBER,
    (NUMBER, "-", NUMBER): NUMBER,
    (DATETIME, "+", DURATION): DATETIME,
    (DATETIME, "-", DURATION): DATETIME,
    (DURATION, "+", DATETIME): DATETIME,
    (DATE, "+", DURATION): DATE,
    (DATE, "-", DURATION): DATE,
    (DURATION, "+", DATE): DATE,
    (DURATION, "+", DURATION): DURATION,
    (DURATION, "-", DURATION): DURATION,
    (DATETIME, "-", DATETIME): DURATION,
    (DATE, "-", DATE): DURATION,
}


def words(c: Compiled) -> str:
    """How an error message names the type of ``c``."""
    return TYPE_WORDS[c.type]


def logic(op: str, operands: list[tuple[Compiled, int]]) -> Compiled:
    """``a and b and c`` (or ``or``) as one closure: chains are flattened by the compiler.

    ``operands`` pairs each operand with the position of the operator before it (the
    first with the first operator's), where a type error points.
    """
    for operand, position in operands:
        if operand.type != BOOLEAN:
            raise RuleError(
                f"'{op}' needs true/false on both sides, not {words(operand)}", position
            )
    parts = [operand for operand, _ in operands]
    fn = _all_of([strict(c) for c in parts]) if op == "and" else _any_of([strict(c) for c in parts])
    return derived(BOOLEAN, fn, *parts, strict=True)


def _all_of(fns: list[Fn]) -> Fn:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda p, now: a(p, now) and b(p, now)
    if len(fns) == 3:
        a, b, c = fns
        return lambda p, now: a(p, now) and b(p, now) and c(p, now)
    head, tail = _all_of(fns[:3]), _all_of(fns[3:])
    return lambda p, now: head(p, now) and tail(p, now)


def _any_of(fns: list[Fn]) -> Fn:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        return lambda p, now: a(p, now) or b(p, now)
    if len(fns) == 3:
        a, b, c = fns
        return lambda p, now: a(p, now) or b(p, now) or c(p, now)
    head, tail = _any_of(fns[:3]), _any_of(fns[3:])
    return lambda p, now: head(p, now) or tail(p, now)


def arithmetic(node: Binary, left: Compiled, right: Compiled) -> Compiled:
    result = _ARITHMETIC.get((left.type, node.op, right.type))
    if result is None:
        raise RuleError(f"cannot compute {words(left)} {node.op} {words(right)}", node.position)
    op = operator.add if node.op == "+" else operator.sub
    a, b = left.fn, right.fn

    def arithmetic(p: Profile, now: datetime) -> object:
        x = a(p, now)
        if x is None:
            return None
        y = b(p, now)
        if y is None:
            return None
        try:
            return op(x, y)
        except OverflowError:  # beyond year 1 or 9999: no such time, as null
            return None

    if left.const and right.const:
        try:
            op(left.value, right.value)
        except OverflowError as exc:
            raise RuleError(
                f"{words(left)} {node.op} {words(right)} is out of range ({exc})", node.position
            ) from exc
    return derived(result, arithmetic, left, right)


def membership(node: Binary, left: Compiled, right: Compiled) -> Compiled:
    if right.type != LIST:
        raise RuleError(
            f"'{node.op}' needs a list on its right (a list field such as categories, "
            f'or a literal list like ["a", "b"]), not {words(right)}',
            node.position,
        )
    if left.type in (LIST, NULL) or (right.elem is not None and left.type != right.elem):
        wanted = TYPE_WORDS[right.elem] if right.elem else "a single value"
        raise RuleError(
            f"'{node.op}' compares {words(left)} with a list of {wanted} items", node.position
        )
    negate = node.op == "not in"
    if right.const:
        members: Any = right.value
        if left.field is not None:
            name = left.field
            if negate:
                return Compiled(
                    BOOLEAN,
                    lambda p, now: (v := p.get(name)) is not None and v not in members,
                    strict=True,
                )
            return Compiled(
                BOOLEAN,
                lambda p, now: (v := p.get(name)) is not None and v in members,
                strict=True,
            )
    a, b = left.fn, right.fn

    def membership(p: Profile, now: datetime) -> bool:
        value = a(p, now)
        if value is None:
            return False
        items = b(p, now)
        if items is None:
            return False
        return (value not in items) if negate else (value in items)

    return derived(BOOLEAN, membership, left, right, strict=True)


def comparison(node: Binary, left: Compiled, right: Compiled) -> Compiled:
    op_text = node.op
    if NULL in (left.type, right.type):
        return _null_test(node, left, right)
    if left.type != right.type:
        hint = ""
        if {left.type, right.type} == {DATE, DATETIME}:
            hint = " (compare dates with today, datetimes with now)"
        raise RuleError(f"cannot compare {words(left)} with {words(right)}{hint}", node.position)
    if op_text not in ("==", "!=") and left.type not in _ORDERED:
        raise RuleError(f"'{op_text}' cannot order {words(left)}; use == or !=", node.position)
    if left.type == LIST:
        raise RuleError("lists can only be tested with 'in' or len()", node.position)
    if left.const and right.field is not None:  # 5 < x reads as x > 5
        left, right, op_text = right, left, _FLIPPED[op_text]
    op = _COMPARE[op_text]
    a, b = left.fn, right.fn
    if left.field is not None and right.const:
        if right.value is None:  # a folded expression that is null
            return constant(False, BOOLEAN)
        return Compiled(BOOLEAN, _FIELD_VS_CONSTANT[op_text](left.field, right.value), strict=True)
    if left.field is not None and right.now_only:
        return Compiled(BOOLEAN, _FIELD_VS_RUN_VALUE[op_text](left.field, b), strict=True)
    if left.field is not None and right.field is not None:
        return Compiled(BOOLEAN, _FIELD_VS_FIELD[op_text](left.field, right.field), strict=True)

    def compare(p: Profile, now: datetime) -> bool:
        x = a(p, now)
        if x is None:
            return False
        y = b(p, now)
        return y is not None and op(x, y)

    return derived(BOOLEAN, compare, left, right, strict=True)


def _null_test(node: Binary, left: Compiled, right: Compiled) -> Compiled:
    """``x == null`` / ``x != null``: the only comparisons that look at null itself."""
    if node.op not in ("==", "!="):
        raise RuleError(
            f"'{node.op}' cannot compare with null; use == null or != null", node.position
        )
    other = right if left.type == NULL else left
    want_null = node.op == "=="
    if other.field is not None:
        name = other.field
        if want_null:
            return Compiled(BOOLEAN, lambda p, now: p.get(name) is None, strict=True)
        return Compiled(BOOLEAN, lambda p, now: p.get(name) is not None, strict=True)
    inner = other.fn
    if want_null:
        return derived(BOOLEAN, lambda p, now: inner(p, now) is None, other, strict=True)
    return derived(BOOLEAN, lambda p, now: inner(p, now) is not None, other, strict=True)


# The two shapes most rules are made of, one closure per operator so evaluating a profile
# costs one call and one dict look-up (a generic closure calling operator.lt costs ~3x).
_FIELD_VS_CONSTANT: dict[str, Callable[[str, Any], Fn]] = {
    "==": lambda f, c: lambda p, now: p.get(f) == c,  # None == c is False: c is not None
    "!=": lambda f, c: lambda p, now: (v := p.get(f)) is not None and v != c,
    "<": lambda f, c: lambda p, now: (v := p.get(f)) is not None and v < c,
    "<=": lambda f, c: lambda p, now: (v := p.get(f)) is not None and v <= c,
    ">": lambda f, c: lambda p, now: (v := p.get(f)) is not None and v > c,
    ">=": lambda f, c: lambda p, now: (v := p.get(f)) is not None and v >= c,
}
# the run value (e.g. now - days(90)) is memoised per ``now`` and never null for ``now``
# arithmetic, but may be null in general (len(null)), hence the second test
_FIELD_VS_RUN_VALUE: dict[str, Callable[[str, Fn], Fn]] = {
    "==": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v == w
    ),
    "!=": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v != w
    ),
    "<": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v < w
    ),
    "<=": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v <= w
    ),
    ">": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v > w
    ),
    ">=": lambda f, b: (
        lambda p, now: (v := p.get(f)) is not None and (w := b(p, now)) is not None and v >= w
    ),
}

_FIELD_VS_FIELD: dict[str, Callable[[str, str], Fn]] = {
    "==": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v == w
    ),
    "!=": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v != w
    ),
    "<": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v < w
    ),
    "<=": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v <= w
    ),
    ">": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v > w
    ),
    ">=": lambda f, g: (
        lambda p, now: (v := p.get(f)) is not None and (w := p.get(g)) is not None and v >= w
    ),
}


def strict(compiled: Compiled) -> Fn:
    """A closure that returns a real bool: a null boolean counts as false."""
    if compiled.strict:
        return compiled.fn
    if compiled.const:
        value = compiled.value is True
        return lambda p, now: value
    if compiled.field is not None:
        name = compiled.field
        return lambda p, now: p.get(name) is True
    inner = compiled.fn
    return lambda p, now: inner(p, now) is True
