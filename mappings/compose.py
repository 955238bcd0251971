"""Joins a mapping's fields into one function: profile -> destination payload.

A mapping is applied to every person on every run, so its fields are not a loop over
closures but one generated function (as ``dataclasses`` writes ``__init__``): a single
dict display with one entry per field, where a field whose profile value is already its
output is a plain ``get``, a null check is an ``is None`` test, and only real
conversions are calls. What the function does per field is decided by
``convert.plan_field``; the text written here holds nothing from the mapping file but
field names, written as ``repr`` literals, so any name is safe.

``compose`` is exercised against the closures it replaces (``compile_field``) in
tests/test_mappings.py: both must give equal payloads for every field kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mappings.convert import INLINE, FieldPlan, compile_field, plan_field
from mappings.model import FieldRule

Apply = Callable[[Mapping[str, object]], dict[str, object]]


def compose(rules: Sequence[FieldRule], *, name: str = "mapping") -> Apply:
    """One function giving every field of ``rules``, keys in the order of ``rules``."""
    bound: dict[str, Any] = {}
    entries = []
    for index, rule in enumerate(rules):
        plan = plan_field(rule)
        if plan is None:
            bound[f"_field{index}"] = compile_field(rule)
            expression = f"_field{index}(profile)"
        else:
            expression = _expression(plan, index, bound)
        entries.append(f"        {rule.name!r}: {expression},")
    parameters = ", ".join(bound)
    source = "\n".join(
        [
            f"def _make({parameters}):",
            "    def apply(profile):",
            "        get = profile.get",
            "        return {",
            *entries,
            "        }",
            "    return apply",
        ]
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{name}>", "exec"), namespace)  # the text written just above
    made: Apply = namespace["_make"](**bound)
    return made


def _expression(plan: FieldPlan, index: int, bound: dict[str, Any]) -> str:
    read = f"get({plan.source!r})"
    if plan.convert is None:
        value = "v"
    elif plan.convert in INLINE:
        value = INLINE[plan.convert]
    else:
        bound[f"_convert{index}"] = plan.convert
        value = f"_convert{index}(v)"
    if plan.null_factory is not None:
        bound[f"_null{index}"] = plan.null_factory
        null = f"_null{index}()"
    elif plan.null is None:
        null = "None"
    else:
        bound[f"_null{index}"] = plan.null
        null = f"_null{index}"
    if value == "v" and null == "None":
        return read
    return f"{null} if (v := {read}) is None else {value}"
