"""``crmsync check`` of a mapping's fields against what a destination already has.

A vendor's own plan of its fields (``prepare``'s, run read only) raises one
``ConfigError`` naming every conflicting field; ``check`` shows each as a failed check
of its own, under the vendor's word for a field.
"""

from __future__ import annotations

from crmsync.contract import Check
from crmsync.errors import ConfigError


def field_conflicts(noun: str, error: ConfigError) -> list[Check]:
    """A failed check per issue of ``error`` (keyed ``mapping.<field>``), named
    ``"{noun} <field>"``, with the issue's message and hint."""
    return [
        Check(
            f"{noun} {issue.key.removeprefix('mapping.')}",
            False,
            f"{issue.message} ({issue.hint})" if issue.hint else issue.message,
        )
        for issue in error.issues
    ]
