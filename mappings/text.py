"""Locale-aware case changes and segment-to-group naming, shared by fields and memberships.

Python's ``str.upper``/``lower`` follow the Unicode defaults, which are wrong for Turkish
and Azerbaijani: there ``i`` upper-cases to ``İ`` and ``I`` lower-cases to ``ı``, and
``"İ".lower()`` must not leave a combining dot behind. The functions here apply those
rules when the locale's language is ``tr`` or ``az`` and the Unicode defaults otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

CaseFn = Callable[[str], str]

DOTTED_I_LANGUAGES = frozenset({"tr", "az"})
CASES = ("upper", "lower", "title")
GROUP_CASES = ("as_is", "kebab", "lower", "upper", "title")

_TO_UPPER_TR = str.maketrans({"i": "\u0130", "\u0131": "I"})  # i -> İ, ı -> I
_TO_LOWER_TR = str.maketrans({"I": "\u0131", "\u0130": "i"})  # I -> ı, İ -> i
_APOSTROPHES = "'\u2019"


def language(locale: str | None) -> str:
    """``tr`` from ``tr``, ``tr_TR`` or ``tr-TR``; empty when no locale is set."""
    return re.split(r"[-_]", locale or "", maxsplit=1)[0].lower()


def upper(locale: str | None) -> CaseFn:
    if language(locale) in DOTTED_I_LANGUAGES:
        return lambda s: s.translate(_TO_UPPER_TR).upper()
    return str.upper


def lower(locale: str | None) -> CaseFn:
    if language(locale) in DOTTED_I_LANGUAGES:
        return lambda s: s.translate(_TO_LOWER_TR).lower()
    return str.lower


def title(locale: str | None) -> CaseFn:
    """Upper-case the first letter of every word, lower-case the rest.

    A word starts after anything that is not a letter, digit or apostrophe, so
    ``istanbul'da`` becomes ``İstanbul'da`` (not ``str.title``'s ``İstanbul'Da``) and
    ``ayşe-nur`` becomes ``Ayşe-Nur``.
    """
    up, down = upper(locale), lower(locale)

    def to_title(text: str) -> str:
        out: list[str] = []
        start_of_word = True
        for ch in text:
            if ch.isalnum():
                out.append(up(ch) if start_of_word else down(ch))
                start_of_word = False
            else:
                out.append(ch)
                start_of_word = ch not in _APOSTROPHES
        return "".join(out)

    return to_title


def case_function(case: str, locale: str | None) -> CaseFn:
    return {"upper": upper, "lower": lower, "title": title}[case](locale)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s_\-]+")


def _words(name: str) -> list[str]:
    return [w for w in _SEPARATORS.split(_CAMEL.sub(" ", name)) if w]


def group_case_function(case: str, locale: str | None) -> CaseFn:
    """How a segment name (``birthday_this_month``) becomes a group name."""
    down, up, cap = lower(locale), upper(locale), title(locale)
    if case == "kebab":
        return lambda name: "-".join(down(w) for w in _words(name))
    if case == "title":
        return lambda name: " ".join(cap(w) for w in _words(name))
    if case == "lower":
        return down
    if case == "upper":
        return up
    return lambda name: name


def group_namer(
    prefix: str, case: str, max_length: int, names: Mapping[str, str], locale: str | None
) -> CaseFn:
    """segment name -> group name: explicit rename or case rule, prefix, then length limit.

    A name that is too long is cut and ends in ``-`` plus 8 hex digits of the segment
    name's SHA-1, so two long segment names that share a beginning never share a group.
    """
    convert = group_case_function(case, locale)

    def name_group(segment: str) -> str:
        group = prefix + (names.get(segment) or convert(segment) or segment)
        if len(group) <= max_length:
            return group
        digest = hashlib.sha1(segment.encode(), usedforsecurity=False).hexdigest()[:8]
        return group[: max_length - 9] + "-" + digest

    return name_group
