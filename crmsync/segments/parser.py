"""Recursive-descent parser: tokens in, a small syntax tree out (nothing is evaluated).

Precedence, loosest first::

    or (||)  <  and (&&)  <  not  <  comparison (== != < <= > >= in, not in)  <  + -  <  unary -

Comparisons do not chain (``a < b < c`` is an error that asks for ``and``), so no rule
means something other than what it seems to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from crmsync.segments.errors import RuleError
from crmsync.segments.lexer import Kind, Token, tokenize

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
# levels of parentheses, lists, calls, 'not' and unary '-' inside each other, and of
# '+'/'-' in one chain: deeper rules are refused with a caret instead of exhausting
# Python's stack (no real rule comes near)
MAX_DEPTH = 50


@dataclass(frozen=True, slots=True)
class Literal:
    value: int | Decimal | str | bool | None
    position: int


@dataclass(frozen=True, slots=True)
class Name:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    position: int


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Node, ...]
    position: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" or "-"
    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # and, or, + -, a comparison, "in" or "not in"
    left: Node
    right: Node
    position: int  # of the operator, where type errors point


Node = Literal | Name | Call | ListLiteral | Unary | Binary


def parse(rule: str) -> Node:
    """The syntax tree of ``rule``; RuleError (with position) on any syntax error."""
    parser = _Parser(tokenize(rule))
    if parser.peek().kind is Kind.END:
        raise RuleError("the rule is empty", 0)
    node = parser.expression()
    end = parser.peek()
    if end.kind is not Kind.END:
        raise RuleError(f"unexpected {end.describe()} (is an 'and' or 'or' missing?)", end.position)
    return node


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._depth = 0

    def _enter(self, token: Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise RuleError(
                f"the rule nests more than {MAX_DEPTH} levels deep (parentheses, lists, "
                "calls, 'not' or '-'); split it into simpler segments",
                token.position,
            )

    def peek(self) -> Token:
        return self._tokens[self._i]

    def _advance(self) -> Token:
        token = self._tokens[self._i]
        if token.kind is not Kind.END:
            self._i += 1
        return token

    def _at(self, *texts: str) -> bool:
        token = self.peek()
        return token.kind in (Kind.OP, Kind.KEYWORD) and token.text in texts

    def _expect(self, text: str, context: str) -> Token:
        token = self.peek()
        if not self._at(text):
            raise RuleError(
                f"expected {text!r} {context}, found {token.describe()}", token.position
            )
        return self._advance()

    def expression(self) -> Node:
        return self._or()

    def _or(self) -> Node:
        node = self._and()
        while self._at("or", "||"):
            op = self._advance()
            node = Binary("or", node, self._and(), op.position)
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._at("and", "&&"):
            op = self._advance()
            node = Binary("and", node, self._not(), op.position)
        return node

    def _not(self) -> Node:
        if self._at("not"):
            op = self._advance()
            self._enter(op)
            node = Unary("not", self._not(), op.position)
            self._depth -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._additive()
        op = self._comparison_operator()
        if op is None:
            return left
        text, position = op
        node = Binary(text, left, self._additive(), position)
        if self._comparison_operator(peek_only=True) is not None:
            raise RuleError(
                "comparisons cannot be chained; combine them with 'and'", self.peek().position
            )
        return node

    def _comparison_operator(self, *, peek_only: bool = False) -> tuple[str, int] | None:
        token = self.peek()
        if token.kind is Kind.OP and token.text in COMPARISONS:
            text = token.text
        elif token.kind is Kind.KEYWORD and token.text == "in":
            text = "in"
        elif (
            token.kind is Kind.KEYWORD
            and token.text == "not"
            and self._tokens[self._i + 1].kind is Kind.KEYWORD
            and self._tokens[self._i + 1].text == "in"
        ):
            text = "not in"
        else:
            return None
        if not peek_only:
            self._advance()
            if text == "not in":
                self._advance()
        return text, token.position

    def _additive(self) -> Node:
        node = self._unary()
        terms = 0
        while self._at("+", "-"):
            op = self._advance()
            terms += 1
            if terms > MAX_DEPTH:
                raise RuleError(f"more than {MAX_DEPTH} '+' or '-' in a row", op.position)
            node = Binary(op.text, node, self._unary(), op.position)
        return node

    def _unary(self) -> Node:
        if self._at("-"):
            op = self._advance()
            self._enter(op)
            node = Unary("-", self._unary(), op.position)
            self._depth -= 1
            return node
        return self._primary()

    def _primary(self) -> Node:
        token = self.peek()
        if token.kind is Kind.NUMBER:
            self._advance()
            return Literal(token.value, token.position)
        if token.kind is Kind.STRING:
            self._advance()
            return Literal(token.text, token.position)
        if token.kind is Kind.KEYWORD and token.text in ("true", "false", "null"):
            self._advance()
            value = {"true": True, "false": False, "null": None}[token.text]
            return Literal(value, token.position)
        if token.kind is Kind.NAME:
            self._advance()
            if self._at("("):
                self._enter(token)
                call = Call(token.text, self._arguments(), token.position)
                self._depth -= 1
                return call
            return Name(token.text, token.position)
        if self._at("("):
            self._enter(self._advance())
            node = self.expression()
            self._expect(")", "to close the '('")
            self._depth -= 1
            return node
        if self._at("["):
            self._enter(token)
            items = self._list()
            self._depth -= 1
            return items
        raise RuleError(f"expected a value, found {token.describe()}", token.position)

    def _arguments(self) -> tuple[Node, ...]:
        self._expect("(", "after the function name")
        args: list[Node] = []
        if not self._at(")"):
            args.append(self.expression())
            while self._at(","):
                self._advance()
                args.append(self.expression())
        self._expect(")", "to close the argument list")
        return tuple(args)

    def _list(self) -> ListLiteral:
        start = self._expect("[", "to open a list")
        items: list[Node] = []
        if not self._at("]"):
            items.append(self._additive())
            while self._at(","):
                self._advance()
                if self._at("]"):  # a trailing comma is fine
                    break
                items.append(self._additive())
        self._expect("]", "to close the list")
        return ListLiteral(tuple(items), start.position)
