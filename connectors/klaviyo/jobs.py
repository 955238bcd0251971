"""Reading a finished bulk import job back into per-person answers.

The job's people's profiles, as ``lookup`` finds them by the e-mail address (else the
phone number) the import sent, with their ids, creation times and subscriptions, and
one import error per refused profile (``/import-errors``, with the payload it refused)
are matched to the people of the job by e-mail address (else phone number), never by
position: the core hands ``collect`` the job's changes in its own order. A profile whose
``created`` time is not before the job's was made by this import: that person is new to
Klaviyo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.klaviyo.consent import KlaviyoConsent, parse_time
from connectors.klaviyo.settle import Imported
from crmsync.contract import Change, Outcome, PushResult

JOB_PROFILE_FIELDS = ("email", "phone_number", "created", "subscriptions")
RUNNING = frozenset({"queued", "processing"})
# import error codes that mean "this payload is wrong" (retried once it changes); any
# other code is Klaviyo's own trouble and the person is retried on later runs
REJECTING_CODES = frozenset({"invalid", "duplicate_profile", "payload_too_large", "conflict"})


def identity(email: object, phone: object) -> str | None:
    """The key a person and Klaviyo's answers are matched by."""
    if isinstance(email, str) and email:
        return "e:" + email.strip().lower()
    if isinstance(phone, str) and phone:
        return "p:" + phone.strip()
    return None


def sent_phone(change: Change) -> str | None:
    """The phone number an import sends for this change (a mapped one wins)."""
    if "phone_number" in change.fields:
        value = change.fields["phone_number"]
        return value if isinstance(value, str) and value else None
    return change.phone


def read_job(
    changes: Sequence[Change],
    job_created: datetime | None,
    profiles: Iterable[Mapping[str, Any]],
    errors: Iterable[Mapping[str, Any]],
) -> tuple[list[Imported], dict[str, PushResult]]:
    """(people Klaviyo imported, final results of the others) for one complete job."""
    by_identity = {identity(c.email, sent_phone(c)): c for c in changes}
    refused: dict[str, PushResult] = {}
    for error in errors:
        attributes = error.get("attributes") or {}
        payload = attributes.get("original_payload") or {}
        change = by_identity.get(identity(payload.get("email"), payload.get("phone_number")))
        if change is None or change.person_key in refused:
            continue
        code = str(attributes.get("code") or "")
        reason = f"Klaviyo refused the profile ({code}): {attributes.get('detail') or ''}"
        outcome = Outcome.REJECTED if code in REJECTING_CODES else Outcome.FAILED
        refused[change.person_key] = PushResult(change.person_key, outcome, message=reason)
    imported: list[Imported] = []
    done: set[str] = set(refused)
    for profile in profiles:
        attributes = profile.get("attributes") or {}
        key = identity(attributes.get("email"), None)
        change = by_identity.get(key) if key else None
        if change is None:
            change = by_identity.get(identity(None, attributes.get("phone_number")))
        if change is None or change.person_key in done or not profile.get("id"):
            continue
        done.add(change.person_key)
        created_at = parse_time(attributes.get("created"))
        created = job_created is not None and created_at is not None and created_at >= job_created
        imported.append(
            Imported(
                change,
                str(profile["id"]),
                created=created,
                consent=KlaviyoConsent.of(attributes),
                phone=sent_phone(change),
            )
        )
    for change in changes:
        if change.person_key not in done:
            refused[change.person_key] = PushResult(
                change.person_key,
                Outcome.FAILED,
                message="Klaviyo's import job gave no answer for this person",
            )
    return imported, refused
