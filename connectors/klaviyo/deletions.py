"""People deleted at the source: out of every owned list and out of Klaviyo's marketing.

Klaviyo has no archive, and the APIs crmsync uses have no data-privacy deletion, so an
``ARCHIVE`` or ``DELETE`` takes the person out of crmsync's lists and suppresses the
e-mail address their profile has (``POST /api/profile-suppression-bulk-create-jobs``,
100 addresses a job, reason ``USER_SUPPRESSED``): no segment or flow built on crmsync's
properties can mail them again. With ``sms`` their number is unsubscribed from SMS
marketing too. Consent only ever goes down here: nobody is subscribed or unsuppressed.

The profile is found first. The ledger usually has its id (``Change.remote_id``), but the
profile may have been deleted or merged in Klaviyo since, so known ids are confirmed with
``any(id,[...])``; the others (a push never acknowledged) are looked up by address with
``any(email,[...])`` or ``any(phone_number,[...])``; 100 per call either way, with the
profile's subscriptions. A person Klaviyo does not have is in none of its lists and gets
no mail: nothing to do (no profile is made just to suppress it).

A suppression job is asynchronous: its people are PENDING on ``suppression:<job id>`` and
``collect`` answers once Klaviyo has completed it. A job that skipped some addresses does
not say which, so then the profiles are read again: a person is OK when theirs shows the
suppression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from connectors.klaviyo.client import KlaviyoApi, KlaviyoApiError
from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.consent import KlaviyoConsent
from connectors.klaviyo.jobs import RUNNING, identity
from connectors.klaviyo.lookup import Field, find
from connectors.klaviyo.payloads import suppress_body
from connectors.klaviyo.settle import Imported, Settler
from crmsync.contract import Action, Change, Outcome, PushResult
from crmsync.errors import TransientError

SUPPRESSION_JOB = "suppression:"  # the prefix of the jobs deletions are PENDING on
SUPPRESSED = "USER_SUPPRESSED"  # the reason Klaviyo records for a suppression by API
FOUND_FIELDS = ("email", "phone_number", "subscriptions")

Chunk = list[tuple[str, str]]  # (person key, e-mail address to suppress)
Refusals = dict[str, tuple[Outcome, str]]  # person key -> why they are not OK


@dataclass(frozen=True, slots=True)
class Found:
    """A deleted person's profile as Klaviyo has it."""

    profile_id: str
    email: str | None  # the address Klaviyo would mail: the one suppressed
    phone: str | None
    suppressed: bool  # its e-mail marketing already shows a USER_SUPPRESSED suppression
    consent: KlaviyoConsent


def find_profiles(api: KlaviyoApi, changes: Sequence[Change], pool: Executor) -> dict[str, Found]:
    """person key -> their Klaviyo profile, for the people Klaviyo has."""
    wanted: dict[str, str] = {}  # identity -> person key
    values: dict[Field, list[str]] = {"id": [], "email": [], "phone_number": []}
    for change in changes:
        if change.remote_id:
            wanted["i:" + change.remote_id] = change.person_key
            values["id"].append(change.remote_id)
        elif change.email:
            wanted[identity(change.email, None) or ""] = change.person_key
            values["email"].append(change.email.strip().lower())
        elif change.phone:
            wanted[identity(None, change.phone) or ""] = change.person_key
            values["phone_number"].append(change.phone.strip())
    found: dict[str, Found] = {}
    for field, chunk in values.items():
        for profile in find(api, field, chunk, FOUND_FIELDS, pool):
            person = wanted.get(_key(field, profile) or "")
            if person is not None and profile.get("id"):
                found.setdefault(person, _found(profile))
    return found


class Deleter:
    """Deletions for one account: list moves through the ``Settler``, suppression jobs here."""

    def __init__(
        self, api: KlaviyoApi, settler: Settler, config: KlaviyoConfig, pool: Executor
    ) -> None:
        self._api, self._settler, self._config, self._pool = api, settler, config, pool

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        """One result per change, in order: OK, PENDING on a suppression job, or why not."""
        found = find_profiles(self._api, changes, self._pool)
        results: dict[str, PushResult] = {}
        people: list[Imported] = []
        addresses: Chunk = []
        for change in changes:
            key = change.person_key
            profile = found.get(key)
            if profile is None:
                results[key] = PushResult(key, Outcome.OK, message="not in Klaviyo")
                continue
            if profile.email is None:
                note = "no e-mail in Klaviyo to suppress"
            elif profile.suppressed:
                note = "the e-mail was already suppressed"
            else:
                note = "suppressed"
                addresses.append((key, profile.email))
            if self._config.sms and profile.phone:
                note += "; SMS unsubscribed"
            people.append(
                Imported(
                    change,
                    profile.profile_id,
                    consent=profile.consent,
                    phone=profile.phone,
                    note=message(change, note),
                )
            )
        size = self._config.jobs.suppress_batch
        chunks = [addresses[start : start + size] for start in range(0, len(addresses), size)]
        # the suppressions go first and side by side with the list moves: they are what
        # keeps a deleted person from being mailed
        futures = [self._pool.submit(self._suppress, chunk) for chunk in chunks]
        down: TransientError | None = None
        try:
            settled = self._settler.settle(people)
        except TransientError as exc:
            down = exc
            settled = [
                PushResult(p.change.person_key, Outcome.FAILED, p.profile_id, str(exc))
                for p in people
            ]
        jobs: dict[str, str] = {}
        refused: Refusals = {}
        transients: list[TransientError | None] = []
        for future in futures:
            started, reasons, transient = future.result()
            jobs.update(started)
            refused.update(reasons)
            transients.append(transient)
        self._raise_when_down(people, down, transients)
        for result in settled:
            key = result.person_key
            if result.outcome is not Outcome.OK:
                results[key] = result
            elif key in refused:
                outcome, why = refused[key]
                results[key] = PushResult(key, outcome, result.remote_id, why)
            elif key in jobs:
                results[key] = PushResult(
                    key, Outcome.PENDING, result.remote_id, job=SUPPRESSION_JOB + jobs[key]
                )
            else:
                results[key] = result
        return [results[change.person_key] for change in changes]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """Final results of a suppression job (its id without the prefix); None while running."""
        try:
            attributes = self._api.suppression_job(job)
        except KlaviyoApiError as exc:
            if exc.status != 404:
                raise
            return _all(changes, Outcome.FAILED, f"Klaviyo no longer knows suppression job {job}")
        status = attributes.get("status")
        if status in RUNNING:
            return None
        if status != "complete":
            return _all(changes, Outcome.FAILED, f"Klaviyo's suppression job {job} is {status}")
        skipped = attributes.get("skipped_count")
        if skipped in (0, None) and attributes.get("completed_count") == attributes.get(
            "total_count"
        ):
            return [
                PushResult(c.person_key, Outcome.OK, message=message(c, "suppressed"))
                for c in changes
            ]
        # Klaviyo skipped some addresses without saying which: look at the profiles
        found = find_profiles(self._api, changes, self._pool)
        results: list[PushResult] = []
        for change in changes:
            key = change.person_key
            profile = found.get(key)
            if profile is None:
                results.append(PushResult(key, Outcome.OK, message="not in Klaviyo"))
            elif profile.suppressed or profile.email is None:
                results.append(
                    PushResult(key, Outcome.OK, profile.profile_id, message(change, "suppressed"))
                )
            else:
                results.append(
                    PushResult(
                        key,
                        Outcome.FAILED,
                        profile.profile_id,
                        f"Klaviyo's suppression job {job} skipped {profile.email}",
                    )
                )
        return results

    def _raise_when_down(
        self,
        people: Sequence[Imported],
        down: TransientError | None,
        transients: Sequence[TransientError | None],
    ) -> None:
        """Raises when every write call failed transiently (suppressions, and list moves or
        SMS unsubscribes when there were any): Klaviyo is down, and failing everyone would
        count against their retries."""
        if not all(t is not None for t in transients):
            return
        if down is not None:
            raise down
        first = transients[0] if transients else None
        moves = any(p.change.memberships_add or p.change.memberships_remove for p in people)
        if first is not None and not moves and not self._settler.consent_jobs(people):
            raise TransientError(f"Klaviyo is unreachable: {first}", retry_after=first.retry_after)

    def _suppress(self, chunk: Chunk) -> tuple[dict[str, str], Refusals, TransientError | None]:
        """(person key -> job id, refusals, the transient error that failed the chunk)."""
        try:
            started, refused = self._part(chunk)
        except TransientError as exc:
            return {}, dict.fromkeys(_keys(chunk), (Outcome.FAILED, f"suppression: {exc}")), exc
        return started, refused, None

    def _part(self, chunk: Chunk) -> tuple[dict[str, str], Refusals]:
        """A job refused as a whole (400) is halved until the refused address is found."""
        try:
            job = self._api.suppress(suppress_body(email for _, email in chunk))
            return dict.fromkeys(_keys(chunk), job), {}
        except KlaviyoApiError as exc:
            if exc.status != 400 or len(chunk) == 1:
                outcome = Outcome.REJECTED if exc.status == 400 else Outcome.FAILED
                why = f"Klaviyo refused the suppression: {exc.detail}"
                return {}, dict.fromkeys(_keys(chunk), (outcome, why))
        half = len(chunk) // 2
        first, second = self._part(chunk[:half]), self._part(chunk[half:])
        return {**first[0], **second[0]}, {**first[1], **second[1]}


def message(change: Change, what: str) -> str:
    """The note of a deletion's OK result."""
    text = f"removed from crmsync's lists; {what}"
    if change.action is Action.DELETE:
        text += "; the profile stays (no data-privacy deletion in the APIs crmsync uses)"
    return text


def _found(profile: Mapping[str, Any]) -> Found:
    attributes = profile.get("attributes")
    attributes = attributes if isinstance(attributes, Mapping) else {}
    email, phone = attributes.get("email"), attributes.get("phone_number")
    subscriptions = attributes.get("subscriptions")
    marketing: Any = None
    if isinstance(subscriptions, Mapping):
        marketing = (subscriptions.get("email") or {}).get("marketing")
    entries = marketing.get("suppression") if isinstance(marketing, Mapping) else None
    suppressed = isinstance(entries, list) and any(
        isinstance(entry, Mapping) and entry.get("reason") == SUPPRESSED for entry in entries
    )
    return Found(
        str(profile["id"]),
        email if isinstance(email, str) and email else None,
        phone if isinstance(phone, str) and phone else None,
        suppressed,
        KlaviyoConsent.of(attributes),
    )


def _key(field: str, profile: Mapping[str, Any]) -> str | None:
    if field == "id":
        return f"i:{profile.get('id')}"
    attributes = profile.get("attributes")
    value = attributes.get(field) if isinstance(attributes, Mapping) else None
    return identity(value, None) if field == "email" else identity(None, value)


def _keys(chunk: Chunk) -> list[str]:
    return [key for key, _ in chunk]


def _all(changes: Sequence[Change], outcome: Outcome, text: str) -> list[PushResult]:
    return [PushResult(c.person_key, outcome, message=text) for c in changes]
