"""Segment rules: a small, safe expression language compiled once into closures.

A rule decides whether a profile is in a segment, e.g.
``orders_count >= 2 and last_order_at < now - days(90)``. Rules are tokenized, parsed
and type-checked against the profile field catalogue when they load; nothing a rule says
is ever handed to ``eval``/``exec``, and names resolve only to catalogue fields, ``now``,
``today`` and the built-in functions below, so ``__import__("os")`` is just an unknown
function. Each rule compiles to a tree of closures (constants folded, values that depend
only on ``now`` computed once per run), so evaluating a profile is a few function calls.

The language
------------
- Logic: ``or``, ``and``, ``not`` (loosest to tightest); ``||`` and ``&&`` are accepted
  as aliases of ``or`` and ``and``. ``!`` is not: write ``not``.
- Comparisons: ``==  !=  <  <=  >  >=`` (no chaining: ``a < b < c`` is an error), and
  ``x in L`` / ``x not in L`` where ``L`` is a list field (``"Kitap" in categories``) or a
  literal list (``top_category in ["Kitap", "Oyuncak"]``).
- Arithmetic: ``+`` and ``-`` on numbers; ``datetime ± duration``, ``date ± duration``,
  ``datetime - datetime`` and ``date - date`` (a duration); unary ``-``.
- Literals: numbers (``2``, ``1000.50``, ``10_000``; integers stay ``int``, numbers with a
  decimal point are ``Decimal``, never float), strings in double or single quotes (escapes
  ``\\\\ \\" \\' \\n \\t``), ``true``, ``false``, ``null``, and lists ``[...]`` of literals
  of one type.
- Names: every field of the catalogue (``crmsync.fields.catalogue``), ``now`` (the run's
  as-of time, a timezone-aware datetime, passed to every evaluation) and ``today``
  (``now``'s date, in ``now``'s time zone).
- Functions: ``days(n)``, ``hours(n)`` (durations), ``year(x)``, ``month(x)``, ``day(x)``
  (of a date or datetime), ``lower(text)``, ``len(text or list)``, and ``date("2024-12-31")``
  / ``datetime("2024-12-31T21:00:00Z")`` for fixed points in time (literal argument only;
  a datetime without an offset is read as UTC).

Types are checked at load: integer and decimal fields are both numbers; a date is not a
datetime (compare dates with ``today``, datetimes with ``now``); ``<``-style ordering works
on numbers, text, dates, datetimes and durations; true/false only with ``==``/``!=``;
``and``/``or``/``not`` need true/false on both sides; a rule must be true/false.

Null semantics (SQL-like)
-------------------------
- Any comparison with a null value is false, ``!=`` and ``not in`` included: for a person
  without orders, both ``last_order_at < now - days(90)`` and
  ``last_order_at >= now - days(90)`` are false.
- ``x == null`` and ``x != null`` are the only ways to test for null.
- Arithmetic and functions on null give null (so the comparison around them is false).
- A null true/false field counts as false where a condition is expected (``not x`` is
  then true). A field missing from the profile dict is treated as null.

Errors are ``RuleError`` (message, caret under the position, close matches for unknown
names and ``known_fields``); ``SegmentSet.compile`` collects every bad rule into one
``SegmentErrors`` (a ``ConfigError``).
"""

from __future__ import annotations

from crmsync.segments.defaults import DEFAULT_SEGMENTS
from crmsync.segments.errors import RuleError, SegmentErrors
from crmsync.segments.segment_set import SegmentSet, compile_rule

__all__ = ["DEFAULT_SEGMENTS", "RuleError", "SegmentErrors", "SegmentSet", "compile_rule"]
