"""The two errors of the rule language: one bad rule, and every bad rule of a set.

``RuleError`` is what an operator sees when a rule does not compile, so its text carries
the rule itself with a caret under the offending character; a ``SegmentErrors`` is a
``ConfigError`` so the configuration loader can report it with every other issue.
"""

from __future__ import annotations

from collections.abc import Sequence

from crmsync.errors import ConfigError, ConfigIssue, CrmsyncError

CATALOGUE_POINTER = "every profile field name is listed by `crmsync fields`"


class RuleError(CrmsyncError):
    """A rule that cannot compile: what is wrong, and where (0-based character offset)."""

    def __init__(
        self,
        message: str,
        position: int,
        *,
        rule: str = "",
        known_fields: Sequence[str] = (),
        suggestions: Sequence[str] = (),
    ) -> None:
        self.message = message
        self.position = position
        self.rule = rule
        self.known_fields: tuple[str, ...] = tuple(known_fields)
        self.suggestions: tuple[str, ...] = tuple(suggestions)
        super().__init__(self._render())

    def with_context(self, rule: str, known_fields: Sequence[str]) -> RuleError:
        """The same error, now knowing the rule text and the field names (set by compile)."""
        return RuleError(
            self.message,
            self.position,
            rule=rule,
            known_fields=known_fields,
            suggestions=self.suggestions,
        )

    def _render(self) -> str:
        text = self.message
        if self.suggestions:
            text += " (did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?)"
        if not self.rule:
            return text
        line, column, source_line = _locate(self.rule, self.position)
        where = f"line {line}, column {column}" if "\n" in self.rule else f"column {column}"
        shown, offset = _window(source_line, column - 1)
        # keep tabs in the caret line so the caret lines up under tab-indented rules
        pad = "".join("\t" if ch == "\t" else " " for ch in shown[:offset])
        source_line = shown
        lines = [f"{text} at {where}:", f"    {source_line}", f"    {pad}^"]
        if self.suggestions or "unknown name" in self.message:
            lines.append(f"    ({CATALOGUE_POINTER})")
        return "\n".join(lines)


_BEFORE, _AFTER = 60, 40  # characters shown around the caret of a long line


def _window(line: str, index: int) -> tuple[str, int]:
    """The part of a long line around ``index``, and the caret's offset in it."""
    start = max(0, index - _BEFORE)
    end = min(len(line), index + _AFTER)
    head = "..." if start > 0 else ""
    tail = "..." if end < len(line) else ""
    return head + line[start:end] + tail, len(head) + index - start


def _locate(rule: str, position: int) -> tuple[int, int, str]:
    """1-based line and column of ``position`` and the text of that line."""
    position = max(0, min(position, len(rule)))
    start = rule.rfind("\n", 0, position) + 1
    end = rule.find("\n", position)
    end = len(rule) if end == -1 else end
    return rule.count("\n", 0, position) + 1, position - start + 1, rule[start:end]


class SegmentErrors(ConfigError):
    """Every rule of a segment set that failed to compile, reported together.

    ``errors`` holds (segment name, RuleError) pairs in the order of the rules; as a
    ``ConfigError`` it also carries one ``ConfigIssue`` per bad rule, keyed
    ``<key>.<segment name>``.
    """

    def __init__(self, errors: Sequence[tuple[str, RuleError]], *, key: str = "segments") -> None:
        self.errors: list[tuple[str, RuleError]] = list(errors)
        super().__init__(
            [ConfigIssue(key=f"{key}.{name}", message=str(error)) for name, error in self.errors]
        )
