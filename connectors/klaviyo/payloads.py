"""Pure builders of Klaviyo's JSON:API bodies: no I/O, so every shape is tested alone.

A profile's mapped fields (``Change.fields``) hold every mapped field on every change, so
nothing is ever omitted: a field whose value went away (None, "" or an empty list) is
sent as ``null``, which is what clears it in Klaviyo ("setting a field to null will clear
it out, whereas not including a field will leave it unchanged"). Field names pick the
place: Klaviyo's standard attributes by name, ``location.<part>`` into the nested
location object, anything else into ``properties``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from crmsync.contract import Change

STANDARD_ATTRIBUTES = frozenset(
    {"first_name", "last_name", "phone_number", "organization", "title", "image", "locale"}
)
LOCATION_PARTS = frozenset(
    {
        "address1",
        "address2",
        "city",
        "country",
        "region",
        "zip",
        "timezone",
        "ip",
        "latitude",
        "longitude",
    }
)
LOCATION = "location."
CUSTOM_SOURCE = "crmsync"  # stored by Klaviyo on the consent records crmsync writes
_JOB_ENVELOPE = 200  # bytes of a job body around its profiles, rounded up


def cleared(value: Any) -> Any:
    """The value to send: None for a value that went away (None, "", [] or {})."""
    if value is None or (isinstance(value, str | list | tuple | dict) and not value):
        return None
    return list(value) if isinstance(value, tuple) else value


def profile_entry(change: Change, segments_property: str | None = None) -> dict[str, Any]:
    """One person as a profile resource for an import (bulk or single).

    The e-mail comes from the change (it identifies the person and is never cleared); the
    phone from a mapped ``phone_number`` field when the mapping has one, else from the
    change. With ``segments_property`` the person's list names go to that property.
    """
    attributes: dict[str, Any] = {}
    location: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    if change.email:
        attributes["email"] = change.email
    if "phone_number" not in change.fields and change.phone:
        attributes["phone_number"] = change.phone
    for name, value in sorted(change.fields.items()):
        if name in STANDARD_ATTRIBUTES:
            attributes[name] = cleared(value)
        elif name.startswith(LOCATION) and name[len(LOCATION) :] in LOCATION_PARTS:
            location[name[len(LOCATION) :]] = cleared(value)
        else:
            properties[name] = cleared(value)
    if segments_property is not None:
        properties[segments_property] = sorted(change.memberships)
    if location:
        attributes["location"] = location
    if properties:
        attributes["properties"] = properties
    return {"type": "profile", "attributes": attributes}


def size_of(entry: Mapping[str, Any]) -> int:
    """Bytes the entry takes in a request body (plus its separating comma)."""
    return len(orjson.dumps(entry)) + 1


def job_bytes_available(bytes_per_job: int) -> int:
    """What the profiles of one job may take, after the job's own envelope."""
    return bytes_per_job - _JOB_ENVELOPE


def import_job_body(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": list(entries)}},
        }
    }


def klaviyo_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, as Klaviyo's filters and consent times take it."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def subscribe_entry(
    profile_id: str,
    email: str | None,
    phone: str | None,
    *,
    email_at: datetime | None = None,
    sms_at: datetime | None = None,
) -> dict[str, Any]:
    """One profile of a subscribe job: the channels given (an address or number) only.

    ``email_at``/``sms_at`` are the recorded consent times, sent only in historical imports.
    """
    attributes: dict[str, Any] = {}
    subscriptions: dict[str, Any] = {}
    for channel, value, key, at in (
        ("email", email, "email", email_at),
        ("sms", phone, "phone_number", sms_at),
    ):
        if value is None:
            continue
        attributes[key] = value
        marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if at is not None:
            marketing["consented_at"] = klaviyo_time(at)
        subscriptions[channel] = {"marketing": marketing}
    attributes["subscriptions"] = subscriptions
    return {"type": "profile", "id": profile_id, "attributes": attributes}


def subscribe_body(entries: Iterable[Mapping[str, Any]], *, historical: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "custom_source": CUSTOM_SOURCE,
        "profiles": {"data": list(entries)},
    }
    if historical:
        attributes["historical_import"] = True
    return {"data": {"type": "profile-subscription-bulk-create-job", "attributes": attributes}}


def unsubscribe_entry(email: str | None, phone: str | None) -> dict[str, Any]:
    """One profile of an unsubscribe job. No list is named, so the unsubscribe is global."""
    attributes: dict[str, Any] = {}
    subscriptions: dict[str, Any] = {}
    if email is not None:
        attributes["email"] = email
        subscriptions["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    if phone is not None:
        attributes["phone_number"] = phone
        subscriptions["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
    attributes["subscriptions"] = subscriptions
    return {"type": "profile", "attributes": attributes}


def unsubscribe_body(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {"profiles": {"data": list(entries)}},
        }
    }


def suppress_body(emails: Iterable[str]) -> dict[str, Any]:
    """A suppression job for these addresses (Klaviyo suppresses by e-mail only)."""
    entries = [{"type": "profile", "attributes": {"email": email}} for email in emails]
    return {
        "data": {
            "type": "profile-suppression-bulk-create-job",
            "attributes": {"profiles": {"data": entries}},
        }
    }


def quoted(value: str) -> str:
    """A string literal for Klaviyo's filter language."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
