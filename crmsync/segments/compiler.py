"""Type-checks a rule's syntax tree against the field catalogue and builds its closures.

Nothing here evaluates user text: names resolve only to catalogue fields, ``now``,
``today`` and the built-ins in ``values.FUNCTIONS``; every operator maps to a fixed
closure. Fast paths cover the shapes rules are mostly made of (field against constant,
field against a per-run value such as ``now - days(90)``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import datetime

from crmsync.fields import ProfileField
from crmsync.segments.errors import RuleError
from crmsync.segments.lexer import KEYWORDS
from crmsync.segments.operators import arithmetic, comparison, logic, membership, strict, words
from crmsync.segments.parser import Binary, Call, ListLiteral, Literal, Name, Node, Unary
from crmsync.segments.values import (
    BOOLEAN,
    DATE,
    DATETIME,
    DURATION,
    FIELD_TYPES,
    FUNCTIONS,
    LIST,
    NULL,
    NUMBER,
    TEXT,
    TYPE_WORDS,
    Compiled,
    Fn,
    constant,
    derived,
    once_per_now,
)

Profile = Mapping[str, object]


class Compiler:
    """Compiles syntax trees for one catalogue; records which fields the rules read."""

    def __init__(self, fields: Mapping[str, ProfileField]) -> None:
        self._types = {name: FIELD_TYPES[f.type] for name, f in fields.items()}
        self.used: set[str] = set()

    def condition(self, node: Node) -> Fn:
        """The rule's closure, returning a real bool; the rule must be true/false."""
        compiled = self.compile(node)
        if compiled.type != BOOLEAN:
            hint = " (compare it, e.g. with > or ==)" if compiled.type != NULL else ""
            raise RuleError(f"a rule must be true or false, not {words(compiled)}{hint}", 0)
        return strict(compiled)

    def compile(self, node: Node) -> Compiled:
        if isinstance(node, Literal):
            return self._literal(node)
        if isinstance(node, Name):
            return self._name(node)
        if isinstance(node, Call):
            return self._call(node)
        if isinstance(node, ListLiteral):
            return self._list(node)
        if isinstance(node, Unary):
            return self._unary(node)
        return self._binary(node)

    @staticmethod
    def _literal(node: Literal) -> Compiled:
        value = node.value
        if value is None:
            return constant(None, NULL)
        if isinstance(value, bool):
            return constant(value, BOOLEAN)
        if isinstance(value, str):
            return constant(value, TEXT)
        return constant(value, NUMBER)

    def _name(self, node: Name) -> Compiled:
        name = node.name
        if name == "now":
            return Compiled(DATETIME, lambda p, now: now, now_only=True)
        if name == "today":
            return Compiled(DATE, once_per_now(lambda p, now: now.date()), now_only=True)
        if name in self._types:
            self.used.add(name)
            type_ = self._types[name]
            return Compiled(
                type_,
                lambda p, now: p.get(name),
                field=name,
                elem=TEXT if type_ == LIST else None,
            )
        if name in FUNCTIONS:
            usage = FUNCTIONS[name].usage
            raise RuleError(f"{name} is a function: call it, as in {usage}", node.position)
        if name.lower() in KEYWORDS or name.lower() in ("now", "today"):
            raise RuleError(
                f"unknown name {name!r} (names and keywords are lower-case: {name.lower()})",
                node.position,
            )
        raise RuleError(
            f"unknown name {name!r}",
            node.position,
            suggestions=difflib.get_close_matches(name, [*self._types, "now", "today"], n=3),
        )

    def _call(self, node: Call) -> Compiled:
        function = FUNCTIONS.get(node.name)
        if function is None:
            if node.name in self._types:
                raise RuleError(f"{node.name} is a profile field, not a function", node.position)
            raise RuleError(
                f"unknown function {node.name!r} (functions: {', '.join(sorted(FUNCTIONS))})",
                node.position,
                suggestions=difflib.get_close_matches(node.name, list(FUNCTIONS), n=2),
            )
        if len(node.args) != 1:
            raise RuleError(
                f"{node.name}() takes exactly 1 argument, got {len(node.args)}", node.position
            )
        arg = self.compile(node.args[0])
        where = node.args[0].position
        if arg.type not in function.accepts:
            wanted = " or ".join(TYPE_WORDS[t] for t in function.accepts)
            raise RuleError(f"{node.name}() needs {wanted}, not {words(arg)}", where)
        if function.constant_only:
            if not arg.const:
                raise RuleError(f"{node.name}() needs a literal, as in {function.usage}", where)
            try:
                return constant(function.apply(arg.value), function.returns)
            except ValueError as exc:
                raise RuleError(f"{node.name}(): {exc} (use {function.usage})", where) from exc
        apply, inner = function.apply, arg.fn
        if arg.const and arg.value is not None:
            try:
                return constant(apply(arg.value), function.returns)
            except (ValueError, OverflowError) as exc:
                raise RuleError(f"{node.name}(): {exc}", where) from exc

        def call(p: Profile, now: datetime) -> object:
            value = inner(p, now)
            if value is None:
                return None
            try:
                return apply(value)
            except (ValueError, OverflowError):  # out of range: no such value, as null
                return None

        return derived(function.returns, call, arg)

    def _list(self, node: ListLiteral) -> Compiled:
        elem: str | None = None
        values: list[object] = []
        for item in node.items:
            compiled = self.compile(item)
            if not compiled.const or compiled.type in (NULL, LIST):
                raise RuleError("list items must be literal values", item.position)
            if elem is not None and compiled.type != elem:
                raise RuleError(
                    f"list items must all be of one type: {words(compiled)} among "
                    f"{TYPE_WORDS[elem]} items",
                    item.position,
                )
            elem = compiled.type
            values.append(compiled.value)
        return constant(frozenset(values), LIST, elem=elem)

    def _unary(self, node: Unary) -> Compiled:
        operand = self.compile(node.operand)
        inner = operand.fn
        if node.op == "not":
            if operand.type != BOOLEAN:
                raise RuleError(f"'not' needs true/false, not {words(operand)}", node.position)
            inner_bool = strict(operand)
            return derived(BOOLEAN, lambda p, now: not inner_bool(p, now), operand, strict=True)
        if operand.type not in (NUMBER, DURATION):
            raise RuleError(f"'-' needs a number or duration, not {words(operand)}", node.position)

        def negate(p: Profile, now: datetime) -> object:
            value = inner(p, now)
            return None if value is None else -value

        return derived(operand.type, negate, operand)

    def _binary(self, node: Binary) -> Compiled:
        if node.op in ("and", "or"):
            return logic(node.op, [(self.compile(n), pos) for n, pos in _chain(node, node.op)])
        left, right = self.compile(node.left), self.compile(node.right)
        if node.op in ("+", "-"):
            return arithmetic(node, left, right)
        if node.op in ("in", "not in"):
            return membership(node, left, right)
        return comparison(node, left, right)


def _chain(node: Node, op: str) -> list[tuple[Node, int]]:
    """The operands of a left-leaning ``a op b op c`` chain, each with an operator position
    (walked in a loop: a chain of a thousand ``or`` is no deeper than one)."""
    rights: list[tuple[Node, int]] = []
    while isinstance(node, Binary) and node.op == op:
        rights.append((node.right, node.position))
        position = node.position
        node = node.left
    if not rights:
        return [(node, -1)]
    return [(node, position), *reversed(rights)]
