"""The tokenizer of the rule language: text in, a list of positioned tokens out.

Only a fixed set of token shapes exists (names, numbers, quoted strings, a dozen
operators); anything else, such as ``.``, ``;`` or a backtick, stops compilation with the
position of the character, which is the first line of defence against rules that try to
be code.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from crmsync.segments.errors import RuleError


class Kind(Enum):
    NAME = "name"
    NUMBER = "number"
    STRING = "string"
    OP = "operator"
    KEYWORD = "keyword"
    END = "end of rule"


KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
# longest first, so "<=" is never read as "<" then "="
OPERATORS = ("&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "(", ")", "[", "]", ",")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # the operator, keyword or name; the decoded value of a string
    position: int
    value: int | Decimal | None = None  # numbers only

    def describe(self) -> str:
        if self.kind is Kind.END:
            return "the end of the rule"
        if self.kind is Kind.STRING:
            return f"string {self.text!r}"
        return f"{self.kind.value} {self.text!r}"


def tokenize(rule: str) -> list[Token]:
    """Every token of ``rule``, ending with an END token; RuleError on anything unknown."""
    tokens: list[Token] = []
    i, n = 0, len(rule)
    while i < n:
        ch = rule[i]
        if ch.isspace():
            i += 1
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            start = i
            while i < n and rule[i].isascii() and (rule[i].isalnum() or rule[i] == "_"):
                i += 1
            word = rule[start:i]
            tokens.append(Token(Kind.KEYWORD if word in KEYWORDS else Kind.NAME, word, start))
        elif _digit(ch):
            token, i = _number(rule, i)
            tokens.append(token)
        elif ch in "\"'":
            token, i = _string(rule, i)
            tokens.append(token)
        else:
            for op in OPERATORS:
                if rule.startswith(op, i):
                    tokens.append(Token(Kind.OP, op, i))
                    i += len(op)
                    break
            else:
                raise RuleError(_unexpected_character(ch), i)
    tokens.append(Token(Kind.END, "", n))
    return tokens


def _unexpected_character(ch: str) -> str:
    if ch == "=":
        return "unexpected '=' (compare with '==')"
    if ch == "!":
        return "unexpected '!' (use 'not', or '!=' to compare)"
    if ch in "&|":
        return f"unexpected {ch!r} (use 'and' / 'or', or '&&' / '||')"
    return f"unexpected character {ch!r}"


def _digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _number(rule: str, start: int) -> tuple[Token, int]:
    """Digits with optional ``_`` separators and one decimal point: int or Decimal."""
    i, n = start, len(rule)
    seen_point = False
    while i < n:
        ch = rule[i]
        next_is_digit = i + 1 < n and _digit(rule[i + 1])
        if _digit(ch) or (ch == "_" and next_is_digit and _digit(rule[i - 1])):
            i += 1
        elif ch == "." and not seen_point and next_is_digit:
            seen_point = True
            i += 1
        else:
            break
    if i < n and (rule[i].isalpha() or rule[i] in "._"):
        raise RuleError(f"malformed number {rule[start : i + 1]!r}", start)
    text = rule[start:i]
    digits = text.replace("_", "")
    value: int | Decimal = Decimal(digits) if seen_point else int(digits)
    return Token(Kind.NUMBER, text, start, value), i


def _string(rule: str, start: int) -> tuple[Token, int]:
    quote = rule[start]
    out: list[str] = []
    i, n = start + 1, len(rule)
    while i < n:
        ch = rule[i]
        if ch == quote:
            return Token(Kind.STRING, "".join(out), start), i + 1
        if ch == "\\":
            escaped = rule[i + 1] if i + 1 < n else ""
            if escaped not in _ESCAPES:
                raise RuleError("unknown escape in string (use \\\\, \\\", \\', \\n or \\t)", i)
            out.append(_ESCAPES[escaped])
            i += 2
        elif ch == "\n":
            break
        else:
            out.append(ch)
            i += 1
    raise RuleError("string is not closed", start)
