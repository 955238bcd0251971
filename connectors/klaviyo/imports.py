"""Sending profiles: bulk import jobs for most pushes, single imports for a handful.

A bulk job answers 202 with its id at once and imports later, so its people are PENDING
until ``collect``. A job Klaviyo refuses as a whole because of one profile (its error
points at ``/data/attributes/profiles/data/<i>``) costs only that person: they are
REJECTED with Klaviyo's reason and the rest is submitted again. A single import answers
201 (created) or 200 (updated) with the profile and its subscriptions, so its people are
settled at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.klaviyo.client import KlaviyoApi, KlaviyoApiError, first_error
from connectors.klaviyo.consent import KlaviyoConsent
from connectors.klaviyo.jobs import REJECTING_CODES, sent_phone
from connectors.klaviyo.payloads import import_job_body
from connectors.klaviyo.settle import Imported
from crmsync.contract import Change, Outcome, PushResult

JOB_POINTER = "/data/attributes/profiles/data/"
MAX_RESUBMITS = 10  # profiles refused one by one in a job before the rest is failed
Entries = Mapping[str, Mapping[str, Any]]  # person key -> profile resource


def start_job(api: KlaviyoApi, chunk: Sequence[Change], entries: Entries) -> list[PushResult]:
    """Submits one job: PENDING with its id for each person, in ``chunk``'s order."""
    out: dict[str, PushResult] = {}
    remaining = list(chunk)
    for _ in range(MAX_RESUBMITS):
        try:
            job = api.create_import_job(import_job_body([entries[c.person_key] for c in remaining]))
        except KlaviyoApiError as exc:
            culprit = _culprit(exc, remaining)
            if culprit is None:
                out.update(_all(remaining, Outcome.FAILED, str(exc)))
                break
            reason = f"Klaviyo refused the profile: {exc.detail}"
            out[culprit.person_key] = PushResult(
                culprit.person_key, Outcome.REJECTED, message=reason
            )
            remaining = [c for c in remaining if c is not culprit]
            if not remaining:
                break
            continue
        out.update(
            (c.person_key, PushResult(c.person_key, Outcome.PENDING, job=job)) for c in remaining
        )
        break
    else:
        out.update(_all(remaining, Outcome.FAILED, "Klaviyo refused the job"))
    return [out[change.person_key] for change in chunk]


def import_one(api: KlaviyoApi, change: Change, entry: Mapping[str, Any]) -> Imported | PushResult:
    """One profile through ``POST /api/profile-import``: the imported person, or the refusal."""
    response = api.import_profile(entry)
    if not response.is_success:
        error = first_error(response)
        code = str(error.get("code") or response.status_code)
        detail = str(error.get("detail") or error.get("title") or "")[:500]
        refused = code in REJECTING_CODES or response.status_code in (400, 409, 413, 422)
        return PushResult(
            change.person_key,
            Outcome.REJECTED if refused else Outcome.FAILED,
            message=f"Klaviyo refused the profile ({code}): {detail}",
        )
    data = response.json().get("data") or {}
    return Imported(
        change,
        str(data.get("id")),
        created=response.status_code == 201,
        consent=KlaviyoConsent.of(data.get("attributes") or {}),
        phone=sent_phone(change),
    )


def _all(changes: Sequence[Change], outcome: Outcome, message: str) -> dict[str, PushResult]:
    return {c.person_key: PushResult(c.person_key, outcome, message=message) for c in changes}


def _culprit(error: KlaviyoApiError, sent: Sequence[Change]) -> Change | None:
    """The change a whole-job refusal points at, if it points at one."""
    if error.status not in (400, 413, 422) or not error.pointer.startswith(JOB_POINTER):
        return None
    index = error.pointer[len(JOB_POINTER) :].split("/", 1)[0]
    return sent[int(index)] if index.isdigit() and int(index) < len(sent) else None
