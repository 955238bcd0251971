"""The ``klaviyo`` destination: profiles in bulk import jobs, segments as lists, consent,
and the store's e-commerce events (``events``).

A push screens the changes, then either imports each profile on its own (a handful of
changes: final answers at once) or cuts them into bulk import jobs (at most 10,000
profiles and 5 MB each) and answers PENDING with the job's id. A push cut in several jobs
holds its last one for the next push to fill (``run_imports``), so a run opens the fewest
jobs both caps allow; its people are PENDING on the hold. ``collect`` looks at the
job; once Klaviyo has completed it, its people's profiles are found by address
(``lookup``), and those it imported get their subscription changes and list moves
(``settle``) and only then OK, with Klaviyo's profile id. List
moves are gathered over the whole run (``run_lists``): full calls go out at once, and a
person with a move held for the end of the run is PENDING on the run's list job, which
``collect`` settles once the run's import jobs are all settled. People deleted at the
source leave the owned lists at once and have their e-mail suppressed (``deletions``):
PENDING on the suppression job, which ``collect`` settles the same way. The core
collects finished jobs while the run still pushes (``collect_early``), so the lookups,
consent jobs and list calls of settling overlap the later import jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import httpx

from connectors.http import BudgetRegistry
from connectors.http.retry import Sleep
from connectors.kit.memberships import owned_problem
from connectors.klaviyo import readback
from connectors.klaviyo.checks import event_checks, run_checks
from connectors.klaviyo.client import KlaviyoApi, KlaviyoApiError
from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.consent import opt_outs, parse_time
from connectors.klaviyo.deletions import SUPPRESSION_JOB, Deleter, find_profiles
from connectors.klaviyo.events import EventSender
from connectors.klaviyo.imports import import_one, start_job
from connectors.klaviyo.jobs import JOB_PROFILE_FIELDS, RUNNING, identity, read_job, sent_phone
from connectors.klaviyo.lists import KlaviyoLists
from connectors.klaviyo.lookup import find
from connectors.klaviyo.mapping_rules import LIST_NAME_MAX, check_mapping
from connectors.klaviyo.payloads import profile_entry, size_of
from connectors.klaviyo.run_imports import HELD_JOB, Prepared, RunImports
from connectors.klaviyo.run_lists import LIST_JOB, RunLists
from connectors.klaviyo.settle import Imported, Settler
from crmsync.contract import (
    Action,
    Change,
    Check,
    ConnectorConfig,
    ConnectorContext,
    ConsentUpdate,
    FieldSpec,
    MappingRules,
    Outcome,
    PushResult,
)
from crmsync.errors import ConfigError, TransientError
from crmsync.events import Event, EventKind, EventResult
from crmsync.personal import mask_key
from crmsync.records import Channel

log = logging.getLogger(__name__)
SEGMENTS_CLASH_HINT = "rename one of them; both would write the same profile property"


class KlaviyoDestination:
    kind: ClassVar[str] = "klaviyo"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "klaviyo.toml"
    config_model: ClassVar[type[ConnectorConfig]] = KlaviyoConfig
    default_mapping: ClassVar[Traversable | None] = files("connectors.klaviyo") / "mapping.toml"
    mapping_rules: ClassVar[MappingRules | None] = staticmethod(check_mapping)
    # jobs the core may collect side by side: one job's look-ups fill the connections
    # while another's list calls wait on Klaviyo's narrower limit for them (10 a second)
    collects_at_once: ClassVar[int] = 2
    # a pass looks at the holds first (the import job that took one is settled with its
    # people once they are handed on to it) and at the run's list job only after every
    # other (the import jobs hand their people's moves on to it, and it waits for those
    # still running), whatever ids Klaviyo gives its jobs
    collected_first: ClassVar[tuple[str, ...]] = (HELD_JOB,)
    collected_last: ClassVar[tuple[str, ...]] = (LIST_JOB,)

    def __init__(
        self,
        config: KlaviyoConfig,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.max_batch = config.jobs.profiles_per_job
        self._api = KlaviyoApi(config, transport=transport, sleep=sleep, budgets=budgets)
        self._lists = KlaviyoLists(self._api, config, sleep=sleep)
        self._pool = ThreadPoolExecutor(
            max_workers=config.concurrency(), thread_name_prefix=f"klaviyo-{context.name}"
        )
        self._run_lists = RunLists(
            self._lists, config.jobs.list_batch, self._pool, self._profile_ids, context.moves
        )
        # Jobs collected before this run's first push (an earlier run's, at its start) move
        # their lists at once: people left PENDING there would be skipped by the diff that
        # follows, and a change of theirs would wait for yet another run.
        self._pushed = False
        self._settler = Settler(self._api, self._lists, config, self._pool, self._run_lists)
        self._deleter = Deleter(self._api, self._settler, config, self._pool)
        # import jobs, a push's last one held for the next when one process has the run
        self._imports = RunImports(
            lambda chunk, entries: start_job(self._api, chunk, entries),
            self._prepare,
            config.jobs,
            self._pool,
            hold=context.moves is None,
        )
        # on workers, the import jobs the run's list job waits for: those this pass of
        # the collect found still running (others may have settled the jobs it started)
        self._shared = context.moves is not None
        self._running: set[str] = set()
        # the core looks at import jobs on several threads (``collects_at_once``), and at
        # the run's list job only once they have all been looked at (``collected_last``)
        self._collecting = threading.Lock()
        self.max_event_batch = config.jobs.events_per_call
        self._events = EventSender(
            self._api,
            config.events.mapping(),
            config.jobs.events_per_call,
            config.jobs.bytes_per_event_call,
        )

    def check(self, fields: Sequence[FieldSpec] = ()) -> list[Check]:
        """The key and the account; Klaviyo takes any property, so of the mapped fields
        only a clash with ``segments_property`` can fail (``prepare`` refuses it too)."""
        checks = run_checks(self._api, self.config)
        clash = self._clash(fields)
        if clash is not None:
            checks.append(Check("segments_property", False, f"{clash} ({SEGMENTS_CLASH_HINT})"))
        return checks

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        """Klaviyo creates properties as they arrive; only a clash is refused here."""
        clash = self._clash(fields)
        if clash is not None:
            raise ConfigError(clash, key="segments_property", hint=SEGMENTS_CLASH_HINT)

    def _clash(self, fields: Sequence[FieldSpec]) -> str | None:
        name = self.config.segments_property
        if name is not None and any(field.name == name for field in fields):
            return f"segments_property {name!r} is also a field of the mapping"
        return None

    # -- push ------------------------------------------------------------------------

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        self._pushed = True
        deletions = [change for change in changes if change.action is not Action.UPSERT]
        upserts, entries, sizes, results = self._prepare(
            [change for change in changes if change.action is Action.UPSERT]
        )
        few = 0 < len(upserts) < self.config.jobs.single_import_below
        if few and not self._imports.holding:
            results.update(self._import_each(upserts, entries))
        elif upserts:
            results.update(self._imports.send(upserts, entries, sizes))
        if deletions:
            results.update((r.person_key, r) for r in self._deleter.push(deletions))
        return [results[change.person_key] for change in changes]

    def _prepare(self, upserts: Sequence[Change]) -> Prepared:
        """The upserts to send, in order, with their profiles and sizes, and the answers
        of those screened out."""
        kept: list[Change] = []
        entries: dict[str, dict[str, Any]] = {}
        sizes: dict[str, int] = {}
        refused: dict[str, PushResult] = {}
        seen: dict[str, str] = {}
        for change in upserts:
            entry = profile_entry(change, self.config.segments_property)
            size = size_of(entry)
            problem = self._screen(change, size, seen)
            if problem is not None:
                refused[change.person_key] = problem
                continue
            entries[change.person_key] = entry
            sizes[change.person_key] = size
            kept.append(change)
        return kept, entries, sizes, refused

    def _screen(self, change: Change, size: int, seen: dict[str, str]) -> PushResult | None:
        """Why this change is not sent (a result), or None when it goes out."""
        key = change.person_key
        ident = identity(change.email, sent_phone(change))
        if ident is None:
            return PushResult(key, Outcome.REJECTED, message="Klaviyo needs an e-mail or phone")
        problem = owned_problem(change, self.config.list_prefix, LIST_NAME_MAX)
        if problem is not None:
            log.warning("person %s: %s", mask_key(key), problem)
            return PushResult(key, Outcome.REJECTED, message=problem)
        limit = self.config.jobs.bytes_per_profile
        if size > limit:
            return PushResult(
                key,
                Outcome.REJECTED,
                message=f"the profile takes {size:,} bytes; Klaviyo accepts at most {limit:,}",
            )
        # one profile per e-mail and per phone number: two people sharing either in one
        # job would be merged into one profile by Klaviyo
        phone = sent_phone(change)
        keys = [k for k in (identity(change.email, None), identity(None, phone)) if k]
        for other in keys:
            if other in seen:
                return PushResult(
                    key,
                    Outcome.REJECTED,
                    message=f"same {other[2:]} as {seen[other]} in this batch",
                )
        seen.update((other, key) for other in keys)
        return None

    def _import_each(
        self, upserts: Sequence[Change], entries: dict[str, dict[str, Any]]
    ) -> dict[str, PushResult]:
        """Single imports, final at once: the answer says whether Klaviyo created the profile."""
        futures = [
            self._pool.submit(import_one, self._api, c, entries[c.person_key]) for c in upserts
        ]
        results: dict[str, PushResult] = {}
        imported: list[Imported] = []
        transients: list[TransientError] = []
        for change, future in zip(upserts, futures, strict=True):
            try:
                found = future.result()
            except TransientError as exc:
                transients.append(exc)
                results[change.person_key] = PushResult(
                    change.person_key, Outcome.FAILED, message=str(exc)
                )
                continue
            if isinstance(found, PushResult):
                results[change.person_key] = found
            else:
                imported.append(found)
        if transients and len(transients) == len(upserts):
            first = transients[0]
            raise TransientError(f"Klaviyo is unreachable: {first}", retry_after=first.retry_after)
        if imported:
            settled = self._settler.settle(imported, gather=True)
            results.update((r.person_key, r) for r in settled)
        return results

    # -- collect ---------------------------------------------------------------------

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        if job.startswith(SUPPRESSION_JOB):
            return self._deleter.collect(job.removeprefix(SUPPRESSION_JOB), changes)
        if job.startswith(LIST_JOB):
            if job == self._run_lists.job:
                with self._collecting:  # after the pass's import jobs (``collected_last``)
                    waiting = self._imports_open()
                    self._running.clear()  # the next pass finds again what still runs
                if waiting:
                    return None  # settled now, it would leave their remainders for a later run
            return self._run_lists.settle(job, changes)
        if job.startswith(HELD_JOB):
            return self._imports.collect(job, changes)
        if self._imports.waits(job):
            return None  # a held job's people are handed on to it first: settled together
        results = self._collect_import(job, changes)
        with self._collecting:
            if results is None:
                self._running.add(job)
            else:
                self._imports.collected(job)
                self._running.discard(job)
        return results

    def _imports_open(self) -> bool:
        """Whether import jobs the run's list job waits for are still running: in one
        process, those it started and has not collected (it collects all it starts); on
        workers, whose coordinator settles jobs the workers started while they push, the
        import jobs this pass of the collect found still running (the core looks at the
        list job after every other, ``collected_last``; a job of an earlier run still
        running is waited for like the run's own)."""
        return bool(self._running) if self._shared else bool(self._imports.open)

    def collect_early(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """``collect`` while the run still pushes (``SettlesWhilePushing``): the same,
        except that what the run's later pushes may add to waits for the final collect:
        the import job held for the next push, and the run's list job (its remainders).
        The run is pushing, from this process or from others (a run on workers, whose
        coordinator settles): list moves are gathered with the run's."""
        self._pushed = True
        if self._imports.holds(job) or job == self._run_lists.job:
            return None
        return self.collect(job, changes)

    def _collect_import(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        try:
            attributes = self._api.import_job(job)
        except KlaviyoApiError as exc:
            if exc.status != 404:
                raise
            return _all(changes, Outcome.FAILED, f"Klaviyo no longer knows import job {job}")
        status = attributes.get("status")
        if status in RUNNING:
            return None
        if status != "complete":
            return _all(changes, Outcome.FAILED, f"Klaviyo's import job {job} is {status}")
        errors = [] if attributes.get("failed_count") == 0 else self._api.import_errors(job)
        imported, results = read_job(
            changes, parse_time(attributes.get("created_at")), self._job_profiles(changes), errors
        )
        if imported:
            settled = self._settler.settle(imported, hold_job=True, gather=self._pushed)
            results.update((r.person_key, r) for r in settled)
        return [results[change.person_key] for change in changes]

    def _job_profiles(self, changes: Sequence[Change]) -> Iterator[dict[str, Any]]:
        """The profiles of a complete job's people, found by what the import sent: the
        e-mail address, else the phone number (``lookup``)."""
        emails = [c.email.strip().lower() for c in changes if c.email]
        phones = [phone.strip() for c in changes if not c.email and (phone := sent_phone(c))]
        yield from find(self._api, "email", emails, JOB_PROFILE_FIELDS, self._pool)
        yield from find(self._api, "phone_number", phones, JOB_PROFILE_FIELDS, self._pool)

    # -- events (EventDestination) ---------------------------------------------------

    def event_names(self) -> Mapping[EventKind, str]:
        """Klaviyo's standard e-commerce metric names, as ``[events]`` overrides them."""
        return self.config.events.mapping()

    def push_events(self, events: Sequence[Event]) -> list[EventResult]:
        """One batch in the fewest bulk create calls; one result per event."""
        return self._events.push(events)

    def check_events(self, kinds: Collection[EventKind]) -> list[Check]:
        """``check`` for a pipeline sending these kinds of events here: the events scope."""
        return event_checks(self._api)

    # -- consent read-back -----------------------------------------------------------

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        fields = ["email", "subscriptions"]
        now = datetime.now(UTC)
        windows = readback.windows(since, now)
        for profile in readback.read(self._api, windows, fields, self._pool, now):
            yield from opt_outs(profile, since, sms=False)
        if self.config.sms:
            # Klaviyo cannot filter on SMS consent: every profile updated since is read
            updated = f"greater-than(updated,{readback.time_after(since)})"
            for profile in self._api.profiles(updated, fields):
                for update in opt_outs(profile, since, sms=True):
                    if update.channel is Channel.SMS:
                        yield update

    def _profile_ids(self, changes: Sequence[Change]) -> dict[str, str]:
        """person key -> Klaviyo profile id, for the people Klaviyo has."""
        found = find_profiles(self._api, changes, self._pool)
        return {key: profile.profile_id for key, profile in found.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._api.close()


def _all(changes: Sequence[Change], outcome: Outcome, message: str) -> list[PushResult]:
    return [PushResult(c.person_key, outcome, message=message) for c in changes]
