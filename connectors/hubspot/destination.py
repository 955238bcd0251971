"""The ``hubspot`` destination: contacts upserted by e-mail in batches, segments as the
options of one multiple-checkbox property (and, with ``lists``, as MANUAL lists), people
deleted at the source archived or GDPR-deleted, consent read back and opt-outs written.

``prepare`` makes the account fit the mapping before anything is written: crmsync's
property group, the properties it needs (created with HubSpot's type for each mapping
type), the segments property; a conflicting property fails the run there, naming it. A
push screens the changes, adds the segment options its people need, and sends batch
upserts of at most 100 contacts side by side; a platform opt-out then unsubscribes the
contact (``consent``). With ``lists``, the list moves of the people upserted are held
for the run (``run_lists``): full calls go out at once, each list's last remainder when
the core collects the run's list job at its end, and a person with a move held is
PENDING on that job until then. When HubSpot's day's calls are spent (down to
``daily_reserve``), the people none of whose calls went out are NOT_SENT, with
``DailyLimitReached``'s message saying when the day ends (push raises it when nothing
of the batch was sent): the core stops sending to HubSpot for the run, and they wait
for a later run with no retry attempt charged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import httpx

from connectors.http import BudgetRegistry
from connectors.http.retry import Sleep
from connectors.hubspot.checks import commerce_checks, run_checks
from connectors.hubspot.client import HubSpotApi, HubSpotApiError
from connectors.hubspot.commerce import CommerceSender
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.consent import opt_outs, record_opt_out
from connectors.hubspot.deals import DealsSender
from connectors.hubspot.deletions import archive
from connectors.hubspot.lists import list_index
from connectors.hubspot.mapping_rules import OPTION_MAX, SEPARATOR, check_mapping
from connectors.hubspot.object_events import EVENT_BATCH, ObjectEvents
from connectors.hubspot.payloads import contact_input
from connectors.hubspot.properties import Existing, plan
from connectors.hubspot.run_lists import LIST_JOB, RunLists
from connectors.hubspot.segments import SegmentOptions
from connectors.hubspot.upserts import not_sent, upsert
from connectors.kit.chunks import chunked, send_chunks
from connectors.kit.memberships import owned_problem
from crmsync.contract import (
    Action,
    Change,
    Check,
    ConnectorConfig,
    ConnectorContext,
    ConsentIntent,
    ConsentUpdate,
    FieldSpec,
    MappingRules,
    Outcome,
    PushResult,
)
from crmsync.errors import ConfigError, RecordError, SendLater, TransientError
from crmsync.events import Event, EventKind, EventResult
from crmsync.personal import mask_key

log = logging.getLogger(__name__)

CONFLICT = 409  # HubSpot's answer to creating what exists
NO_EMAIL = "HubSpot contacts are upserted by e-mail, and this person has none"


class HubSpotDestination:
    kind: ClassVar[str] = "hubspot"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "hubspot.toml"
    config_model: ClassVar[type[ConnectorConfig]] = HubSpotConfig
    default_mapping: ClassVar[Traversable | None] = files("connectors.hubspot") / "mapping.toml"
    mapping_rules: ClassVar[MappingRules | None] = staticmethod(check_mapping)
    wants_event_facts: ClassVar[bool] = True  # the ids the ledgers hold, no reads for them

    def __init__(
        self,
        config: HubSpotConfig,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.max_batch = config.batch_size * config.http.rate.max_concurrency
        self._api = HubSpotApi(config, transport=transport, sleep=sleep, budgets=budgets)
        self._options = SegmentOptions(self._api, config.segments_property)
        self._types: dict[str, str] = {}  # property -> HubSpot type, from prepare
        self._pool = ThreadPoolExecutor(
            max_workers=config.http.rate.max_concurrency,
            thread_name_prefix=f"hubspot-{context.name}",
        )
        self._lists = list_index(self._api, config.segment_prefix)
        self._run_lists = RunLists(
            self._api, self._lists, config.list_batch, self._pool, context.moves
        )
        self.max_event_batch = EVENT_BATCH  # chunked into calls of 100 by the sender
        self._events: ObjectEvents = (
            DealsSender(self._api, config)
            if config.events.objects == "deals"
            else CommerceSender(self._api)
        )

    def check(self, fields: Sequence[FieldSpec] = ()) -> list[Check]:
        """The token, scopes, group, lists and the mapped properties (creating nothing)."""
        return run_checks(self._api, self.config, fields)

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        """Creates crmsync's group and the properties the mapping needs; ConfigError naming
        every conflicting property, before any contact is written."""
        group = self.config.property_group
        existing = [Existing.of(item) for item in self._api.properties()]
        found = plan(fields, self.config.segments_property, existing, group)
        if found.create and all(g.get("name") != group for g in self._api.groups()):
            try:
                self._api.create_group(group, group)
            except HubSpotApiError as exc:
                if exc.status != CONFLICT:  # made meanwhile, or by a try whose answer was lost
                    raise
        for body in found.create:
            try:
                self._api.create_property(body)
            except HubSpotApiError as exc:
                if exc.status == CONFLICT and self._made(body):
                    continue  # a retried create whose first answer was lost
                raise ConfigError(
                    f"HubSpot refused to create property {body['name']} "
                    f"({body['type']}/{body['fieldType']}): {exc.message}",
                    key=f"mapping.{body['name']}",
                    hint="check the contact properties in HubSpot",
                ) from exc
        for name, options in found.grow:
            self._api.update_property(name, {"options": list(options)})
        self._types.update(found.types)
        self._options.know(found.segment_options)

    # -- one preparation for every process of a run (PreparedOnce) -------------------

    def prepared(self) -> dict[str, Any]:
        """What ``prepare`` found that the pushes need: the properties' HubSpot types and
        the segments property's options."""
        return {"types": dict(self._types), "segment_options": self._options.known()}

    def adopt(self, prepared: Mapping[str, Any]) -> None:
        """Takes what another process's ``prepare`` (and ``expect``) of the run found,
        in place of ``prepare``: no call."""
        self._types.update({str(k): str(v) for k, v in dict(prepared["types"]).items()})
        self._options.know(str(value) for value in prepared["segment_options"])

    def expect(self, groups: Collection[str]) -> None:
        """Adds, in one update, the segment options the run's changes need and the
        property lacks, so that no push adds any (the names a push refuses are left out:
        ``_screen``)."""
        prefix = self.config.segment_prefix
        self._options.ensure(
            name
            for name in groups
            if name.startswith(prefix)
            and name.strip()
            and len(name) <= OPTION_MAX
            and SEPARATOR not in name
        )

    def _made(self, body: dict[str, Any]) -> bool:
        found = Existing.of(self._api.property(str(body["name"])))
        return (found.type, found.field_type) == (body["type"], body["fieldType"])

    # -- push ------------------------------------------------------------------------

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        over = self._api.day_over()
        if over is not None:  # nothing is sent once the day's calls are spent
            raise over
        try:
            return self._push(changes)
        except SendLater as exc:
            # the calls ran out where no person's result says so, after part of the
            # batch went out: not "nothing sent", so the core keeps the batch in flight
            raise TransientError(str(exc), retry_after=exc.retry_after) from exc

    def _push(self, changes: Sequence[Change]) -> list[PushResult]:
        results: dict[str, PushResult] = {}
        inputs: dict[str, dict[str, Any]] = {}
        upserts: list[Change] = []
        deletions: list[Change] = []
        seen: dict[str, str] = {}
        for change in changes:
            if change.action is not Action.UPSERT:
                deletions.append(change)
                continue
            refused = self._screen(change, seen)
            if refused is None:
                try:
                    inputs[change.person_key] = contact_input(
                        change, self._types, self.config.segments_property
                    )
                except RecordError as exc:
                    refused = PushResult(change.person_key, Outcome.REJECTED, message=str(exc))
            if refused is not None:
                results[change.person_key] = refused
                continue
            upserts.append(change)
        size = self.config.batch_size
        if upserts:
            sent = send_chunks(
                chunked(upserts, size),
                lambda chunk: self._upsert(chunk, inputs),
                self._pool,
                name="HubSpot",
            )
            results.update((r.person_key, r) for r in sent)
            if self.config.lists:
                self._move_lists(upserts, results)
        if deletions:
            gdpr = self.config.deletion == "gdpr_delete"
            gone = send_chunks(
                chunked(deletions, size),
                lambda chunk: archive(self._api, chunk, gdpr=gdpr),
                self._pool,
                name="HubSpot",
            )
            results.update((r.person_key, r) for r in gone)
        return [results[change.person_key] for change in changes]

    def _upsert(
        self, chunk: Sequence[Change], inputs: dict[str, dict[str, Any]]
    ) -> list[PushResult]:
        try:
            wanted = {name for change in chunk for name in change.memberships}
            self._options.ensure(wanted)
            results = upsert(self._api, chunk, inputs, lambda: self._options.restore(wanted))
        except SendLater as exc:  # the day's calls ran out before this chunk went
            return not_sent(chunk, exc)
        subscriptions = self.config.opt_out_subscriptions
        if not subscriptions:
            return results
        by_key = {change.person_key: change for change in chunk}
        return [self._opt_out(by_key.get(result.person_key), result) for result in results]

    def _opt_out(self, change: Change | None, result: PushResult) -> PushResult:
        """Records a platform opt-out of a person upserted OK; FAILED when HubSpot refused."""
        if (
            change is None
            or not change.email
            or result.outcome is not Outcome.OK
            or change.email_intent is not ConsentIntent.UNSUBSCRIBE
        ):
            return result
        problem = record_opt_out(self._api, change.email, self.config.opt_out_subscriptions)
        if problem is None:
            return result
        return PushResult(result.person_key, Outcome.FAILED, result.remote_id, problem)

    def _move_lists(self, upserts: Sequence[Change], results: dict[str, PushResult]) -> None:
        """Moves the lists of the people upserted OK: a failed move turns their result
        FAILED, a move held for a fuller call PENDING on the run's list job."""
        upserted = [
            (change, results[change.person_key].remote_id or "")
            for change in upserts
            if results[change.person_key].outcome is Outcome.OK
        ]
        try:
            answers = self._run_lists.move([(c, record) for c, record in upserted if record])
        except SendLater as exc:  # upserted, but the day's calls ran out before the lists
            answers = {change.person_key: f"lists not moved: {exc}" for change, _ in upserted}
        for change, record in upserted:
            if change.person_key not in answers:
                continue
            reason, key = answers[change.person_key], change.person_key
            if reason is None:
                results[key] = PushResult(
                    key, Outcome.PENDING, record, "lists held", self._run_lists.job
                )
            else:
                results[key] = PushResult(key, Outcome.FAILED, record, reason)

    def _screen(self, change: Change, seen: dict[str, str]) -> PushResult | None:
        """Why this change is not sent (a result), or None when it goes out."""
        key = change.person_key
        if not change.email:
            return PushResult(key, Outcome.REJECTED, message=NO_EMAIL)
        problem = owned_problem(change, self.config.segment_prefix, OPTION_MAX, noun="segment")
        if problem is None and any(SEPARATOR in name for name in change.memberships):
            problem = "a segment name holds ';', which separates HubSpot's values"
        if problem is not None:
            log.warning("person %s: %s", mask_key(key), problem)
            return PushResult(key, Outcome.REJECTED, message=problem)
        email = change.email.strip().lower()
        if email in seen:  # HubSpot refuses a batch that names one contact twice
            return PushResult(key, Outcome.REJECTED, message=f"same e-mail as {seen[email]}")
        seen[email] = key
        return None

    # -- events (EventDestination) ---------------------------------------------------

    def event_names(self) -> Mapping[EventKind, str]:
        """The kinds HubSpot takes, named by the object each one writes."""
        return self._events.names()

    def push_events(self, events: Sequence[Event]) -> list[EventResult]:
        """One batch as orders and carts with line items (``commerce``), or as deals
        with line items (``deals``)."""
        over = self._api.day_over()
        if over is not None:
            raise over
        return self._events.push(events)

    def check_events(self, kinds: Collection[EventKind]) -> list[Check]:
        """``check`` for a pipeline sending these kinds of events here: the commerce
        objects' scopes (deals are checked by ``check`` itself, ``deals.deal_checks``)."""
        if self.config.events.objects != "commerce":
            return []
        return commerce_checks(self._api, kinds)

    # -- the rest of the contract ------------------------------------------------------

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """Settles a run's list job: people upserted whose list moves were held."""
        if job.startswith(LIST_JOB):
            return self._run_lists.settle(job, changes)
        message = f"unknown HubSpot job {job!r}: sent again"
        return [PushResult(c.person_key, Outcome.FAILED, message=message) for c in changes]

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        """Contacts unsubscribed from all e-mail in HubSpot, changed since ``since``."""
        return opt_outs(self._api, since)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._api.close()
