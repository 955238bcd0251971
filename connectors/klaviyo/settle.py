"""The second half of every push: once Klaviyo has a person's profile, move their lists and
subscriptions, and only then answer OK.

Used for single imports (at once), for bulk import jobs (when ``collect`` finds the job
complete) and for deletions (their lists, and an SMS unsubscribe with ``sms``). A person
is OK only when every list move and subscription call that concerns them was accepted, so
the core's ledger never records a membership or a consent change Klaviyo does not have:
imported people's list moves are gathered over the run (``run_lists``), and whoever has a
move still held is PENDING on the run's list job until it is sent. A
subscription job Klaviyo refuses as a whole (400) is halved until the refused person is
found, who is REJECTED with Klaviyo's reason (an SMS number Klaviyo cannot text, say);
nobody else pays for it. When every call failed transiently Klaviyo is down:
``TransientError`` is raised rather than a failure counted against everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.klaviyo.client import KlaviyoApi, KlaviyoApiError
from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.consent import KlaviyoConsent, plan_consent
from connectors.klaviyo.lists import KlaviyoLists
from connectors.klaviyo.payloads import (
    subscribe_body,
    subscribe_entry,
    unsubscribe_body,
    unsubscribe_entry,
)
from connectors.klaviyo.run_lists import HELD, RunLists
from crmsync.contract import Action, Change, Outcome, PushResult
from crmsync.errors import TransientError
from crmsync.records import Channel

Entries = list[tuple[str, dict[str, Any]]]  # (profile id, its entry in a consent job)
Refusals = dict[str, tuple[Outcome, str]]  # profile id -> why its person is not OK


@dataclass(frozen=True, slots=True)
class Imported:
    """A person whose profile Klaviyo has: its id and what Klaviyo said about it."""

    change: Change
    profile_id: str
    created: bool = False  # Klaviyo created the profile in this very import
    consent: KlaviyoConsent = field(default_factory=KlaviyoConsent)
    phone: str | None = None  # the number sent in the import
    note: str = ""  # shown with an OK result


@dataclass(frozen=True, slots=True)
class ConsentJob:
    """One subscribe or unsubscribe job and the profiles it concerns."""

    subscribe: bool
    historical: bool
    entries: Entries

    def body(self, entries: Entries) -> dict[str, Any]:
        if self.subscribe:
            return subscribe_body([e for _, e in entries], historical=self.historical)
        return unsubscribe_body([e for _, e in entries])


class Settler:
    def __init__(
        self,
        api: KlaviyoApi,
        lists: KlaviyoLists,
        config: KlaviyoConfig,
        pool: Executor,
        run: RunLists | None = None,
    ) -> None:
        self._api, self._lists, self._config, self._pool = api, lists, config, pool
        self._run = run

    def settle(
        self, people: Sequence[Imported], *, hold_job: bool = False, gather: bool = False
    ) -> list[PushResult]:
        """One result per person, in order; raises TransientError when nothing arrived.

        ``hold_job`` (a bulk job being collected): a consent job that failed transiently
        raises too, so the import job stays in flight and is settled again later. Failing
        those people instead would lose their subscription: re-sent, they would find their
        profile in Klaviyo and no longer count as new.

        ``gather`` (with the run's ``RunLists``): list moves are held for fuller calls,
        and a person with a move still held is PENDING on the run's list job.
        """
        moves = [
            (p.profile_id, p.change.memberships_add, p.change.memberships_remove)
            for p in people
            if p.change.memberships_add or p.change.memberships_remove
        ]
        jobs = [self._pool.submit(self._send, job) for job in self.consent_jobs(people)]
        refused: Refusals = {}
        transients: list[TransientError | None] = []
        held: set[str] = set()
        run = self._run if gather else None
        if moves:  # sent from this thread, side by side with the consent jobs
            if run is not None:
                kept = run.move(moves)
                failed, transients, held = kept.failed, kept.transients, kept.waiting
            else:
                failed, transients = self._lists.apply(self._lists.plan(moves), self._pool)
            refused.update((i, (Outcome.FAILED, why)) for i, why in failed.items())
        for future in jobs:
            reasons, transient = future.result()
            if transient is not None and hold_job:
                raise TransientError(
                    f"Klaviyo's consent update failed, settled later: {transient}",
                    retry_after=transient.retry_after,
                )
            transients.append(transient)
            for ident, reason in reasons.items():
                refused.setdefault(ident, reason)
        if transients and all(t is not None for t in transients):
            first = transients[0]
            assert first is not None
            raise TransientError(f"Klaviyo is unreachable: {first}", retry_after=first.retry_after)
        if run is None or not held:
            return [_result(p, refused.get(p.profile_id)) for p in people]
        return [
            PushResult(p.change.person_key, Outcome.PENDING, p.profile_id, HELD, run.job)
            if p.profile_id in held and p.profile_id not in refused
            else _result(p, refused.get(p.profile_id))
            for p in people
        ]

    def consent_jobs(self, people: Sequence[Imported]) -> list[ConsentJob]:
        """The subscribe and unsubscribe jobs these people need, at most a job's worth each."""
        config = self._config
        historical: Entries = []
        plain: Entries = []
        leaving: Entries = []
        for person in people:
            change = person.change
            if change.action is not Action.UPSERT:
                # a deletion only ever lowers consent: its e-mail is suppressed apart
                # (``deletions``), and with ``sms`` its number is unsubscribed here
                if config.sms and person.phone and not person.consent.unsubscribed(Channel.SMS):
                    leaving.append((person.profile_id, unsubscribe_entry(None, person.phone)))
                continue
            plan = plan_consent(
                change, person.phone, person.consent, created=person.created, sms=config.sms
            )
            if plan.subscribe:
                email = change.email if Channel.EMAIL in plan.subscribe else None
                phone = person.phone if Channel.SMS in plan.subscribe else None
                times = _consent_times(change, email, phone) if config.historical_import else None
                entry = subscribe_entry(person.profile_id, email, phone, **(times or {}))
                (plain if times is None else historical).append((person.profile_id, entry))
            if plan.unsubscribe:
                email = change.email if Channel.EMAIL in plan.unsubscribe else None
                phone = person.phone if Channel.SMS in plan.unsubscribe else None
                leaving.append((person.profile_id, unsubscribe_entry(email, phone)))
        size = config.jobs
        return [
            *(ConsentJob(True, True, c) for c in _chunks(historical, size.subscribe_batch)),
            *(ConsentJob(True, False, c) for c in _chunks(plain, size.subscribe_batch)),
            *(ConsentJob(False, False, c) for c in _chunks(leaving, size.unsubscribe_batch)),
        ]

    def _send(self, job: ConsentJob) -> tuple[Refusals, TransientError | None]:
        try:
            return self._part(job, job.entries), None
        except TransientError as exc:
            return dict.fromkeys(_ids(job.entries), (Outcome.FAILED, f"consent: {exc}")), exc

    def _part(self, job: ConsentJob, entries: Entries) -> Refusals:
        send = self._api.subscribe if job.subscribe else self._api.unsubscribe
        try:
            send(job.body(entries))
            return {}
        except KlaviyoApiError as exc:
            if exc.status != 400 or len(entries) == 1:
                outcome = Outcome.REJECTED if exc.status == 400 else Outcome.FAILED
                why = f"Klaviyo refused the consent change: {exc.detail}"
                return dict.fromkeys(_ids(entries), (outcome, why))
        half = len(entries) // 2
        return {**self._part(job, entries[:half]), **self._part(job, entries[half:])}


def _result(person: Imported, refused: tuple[Outcome, str] | None) -> PushResult:
    key, ident = person.change.person_key, person.profile_id
    if refused is not None:
        return PushResult(key, refused[0], ident, refused[1])
    return PushResult(key, Outcome.OK, ident, person.note)


def _consent_times(
    change: Change, email: str | None, phone: str | None
) -> dict[str, datetime] | None:
    """The recorded consent times for a historical import; None when one is missing.

    Klaviyo refuses a consent time in the future (a source clock ahead of ours): it is
    sent as now.
    """
    now = datetime.now(UTC)
    times: dict[str, datetime] = {}
    for key, wanted, at in (
        ("email_at", email, change.email_consent_at),
        ("sms_at", phone, change.sms_consent_at),
    ):
        if wanted is None:
            continue
        if at is None:
            return None
        times[key] = min(at if at.tzinfo else at.replace(tzinfo=UTC), now)
    return times


def _ids(entries: Entries) -> list[str]:
    return [ident for ident, _ in entries]


def _chunks(items: Entries, size: int) -> list[Entries]:
    return [items[start : start + size] for start in range(0, len(items), size)]
