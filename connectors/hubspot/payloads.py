"""Pure builders of HubSpot's batch inputs: every property value a string in its format.

HubSpot takes every property value as a string and reads it by the property's type:
numbers as plain decimals (``1234.5``, never ``1.2345E3``), booleans as ``true`` and
``false``, dates as ``YYYY-MM-DD``, datetimes as UTC milliseconds since the epoch, the
values of a multiple-checkbox property joined with ``;``. An empty string clears a value
("property values can be cleared by passing an empty string"), so a mapped value that
went away is sent as ``""``: every mapped field is sent on every change, nothing is left
stale in HubSpot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.hubspot.mapping_rules import SEPARATOR
from crmsync.contract import Change
from crmsync.errors import RecordError


def encode(value: Any, hubspot_type: str | None) -> str:
    """A mapped value as HubSpot takes it for a property of ``hubspot_type``."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before numbers: a bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return _decimal(value)
    if isinstance(value, str):
        return _milliseconds(value) if hubspot_type == "datetime" and value else value
    if isinstance(value, list | tuple):
        return SEPARATOR.join(str(item) for item in value)
    return str(value)


def _decimal(value: float | Decimal) -> str:
    """Plain notation: HubSpot's numbers are digits with at most one decimal point."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        value = Decimal(repr(value))
    elif not value.is_finite():
        return ""
    return format(value, "f")


def _milliseconds(value: str) -> str:
    """An ISO 8601 time (the mapping's datetime) as UTC milliseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RecordError("not an ISO 8601 time", value=value) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(round(moment.timestamp() * 1000))


def segments_value(memberships: Iterable[str]) -> str:
    """The multiple-checkbox value: the person's owned segments, sorted, ``;``-joined."""
    return SEPARATOR.join(sorted(memberships))


def contact_input(
    change: Change, types: Mapping[str, str], segments_property: str
) -> dict[str, Any]:
    """One person as a batch upsert input, by e-mail. Raises ``RecordError`` naming the
    field whose value HubSpot could not take."""
    properties: dict[str, str] = {}
    for name, value in sorted(change.fields.items()):
        try:
            properties[name] = encode(value, types.get(name))
        except RecordError as exc:
            raise RecordError(exc.reason, field=name, value=value) from exc
    properties[segments_property] = segments_value(change.memberships)
    return {"idProperty": "email", "id": change.email, "properties": properties}
