"""The ``hubspot`` destination: contacts upserted by e-mail in batches, segments as the
options of one multiple-checkbox property, people deleted at the source archived.

``prepare`` makes the account fit the mapping before anything is written: crmsync's
property group, the properties it needs (created with HubSpot's type for each mapping
type), the segments property; a conflicting property fails the run there, naming it. A
push screens the changes, adds the segment options its people need, and sends batch
upserts of at most 100 contacts side by side; every answer is final at once (HubSpot
has no asynchronous jobs here), so nothing is ever PENDING.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import httpx

from connectors.http import BudgetRegistry
from connectors.http.retry import Sleep
from connectors.hubspot.checks import run_checks
from connectors.hubspot.client import HubSpotApi, HubSpotApiError
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.deletions import archive
from connectors.hubspot.mapping_rules import OPTION_MAX, SEPARATOR, check_mapping
from connectors.hubspot.payloads import contact_input
from connectors.hubspot.properties import Existing, plan
from connectors.hubspot.segments import SegmentOptions
from connectors.hubspot.upserts import upsert
from connectors.kit.chunks import chunked, send_chunks
from connectors.kit.memberships import owned_problem
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
from crmsync.errors import ConfigError, RecordError

log = logging.getLogger(__name__)

CONFLICT = 409  # HubSpot's answer to creating what exists
NO_EMAIL = "HubSpot contacts are upserted by e-mail, and this person has none"


class HubSpotDestination:
    kind: ClassVar[str] = "hubspot"
    config_model: ClassVar[type[ConnectorConfig]] = HubSpotConfig
    default_mapping: ClassVar[Traversable | None] = files("connectors.hubspot") / "mapping.toml"
    mapping_rules: ClassVar[MappingRules | None] = staticmethod(check_mapping)

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

    def check(self) -> list[Check]:
        return run_checks(self._api, self.config)

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

    def _made(self, body: dict[str, Any]) -> bool:
        found = Existing.of(self._api.property(str(body["name"])))
        return (found.type, found.field_type) == (body["type"], body["fieldType"])

    # -- push ------------------------------------------------------------------------

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
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
        if deletions:
            gone = send_chunks(
                chunked(deletions, size),
                lambda chunk: archive(self._api, chunk),
                self._pool,
                name="HubSpot",
            )
            results.update((r.person_key, r) for r in gone)
        return [results[change.person_key] for change in changes]

    def _upsert(
        self, chunk: Sequence[Change], inputs: dict[str, dict[str, Any]]
    ) -> list[PushResult]:
        self._options.ensure(name for change in chunk for name in change.memberships)
        return upsert(self._api, chunk, inputs)

    def _screen(self, change: Change, seen: dict[str, str]) -> PushResult | None:
        """Why this change is not sent (a result), or None when it goes out."""
        key = change.person_key
        if not change.email:
            return PushResult(key, Outcome.REJECTED, message=NO_EMAIL)
        problem = owned_problem(change, self.config.segment_prefix, OPTION_MAX, noun="segment")
        if problem is None and any(SEPARATOR in name for name in change.memberships):
            problem = "a segment name holds ';', which separates HubSpot's values"
        if problem is not None:
            log.warning("person %s: %s", key, problem)
            return PushResult(key, Outcome.REJECTED, message=problem)
        email = change.email.strip().lower()
        if email in seen:  # HubSpot refuses a batch that names one contact twice
            return PushResult(key, Outcome.REJECTED, message=f"same e-mail as {seen[email]}")
        seen[email] = key
        return None

    # -- the rest of the contract ------------------------------------------------------

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """HubSpot answers every call at once: there are no jobs to collect."""
        return None

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        """Consent is not read back from HubSpot yet (its communication preferences)."""
        return iter(())

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._api.close()
