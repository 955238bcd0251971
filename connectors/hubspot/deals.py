"""Events as HubSpot deals with line items (``[events] objects = "deals"``), for
accounts without HubSpot's commerce objects.

- placed order: its line items (batch create), then its deal (batch create) in
  ``pipeline`` at ``won_stage``, closed at the order's instant, with its amount and
  currency, associated with the contact (3) and the line items (19);
- fulfilled, cancelled, refunded order: a batch update of the deal with the order's
  statuses now; cancelled or wholly refunded also moves it to ``lost_stage``;
- started checkout (only with ``checkout_stage``): an open deal there with its line
  items and the checkout link; closed checkout: that deal archived, or moved to
  ``closed_checkout_stage``;
- ordered product: not taken, its deal's line items carry it.

The steps are the commerce objects' (``object_events``; the reads ``objects``, the
writes ``object_writes``), with the same savings from the event's facts: the contact
from the people's ledger (else read by e-mail), a status update or a checkout's close
sent to the deal id the event ledger holds, and a search for crmsync's deals (on its
own properties: the order's or cart's id and the source's name) only for the records
that may already be there, so a resend creates nothing. Those properties are created in
the account, in ``property_group``, by the first push of a run that sends events (a
property of the same name and another type stops the events, naming it). A person
HubSpot has no contact for is REJECTED, as are their order's later statuses. A
backfill's past orders are made deals closed at their true date; its past checkouts are
not sent. A missing scope (403) stops the events naming the scopes deals need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from connectors.hubspot import deal_bodies as bodies
from connectors.hubspot.client import HubSpotAccessError, HubSpotApi, HubSpotApiError
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.object_events import ObjectEvents
from connectors.hubspot.object_writes import result
from crmsync.contract import Check, Outcome
from crmsync.errors import ConfigError, ConnectorError
from crmsync.events import Event, EventKind, EventResult

PROPERTIES = "/crm/v3/properties/deals"
GROUPS = "/crm/v3/properties/deals/groups"
PIPELINES = "/crm/v3/pipelines/deals"
CONFLICT = 409


class DealsSender(ObjectEvents):
    """Sends one batch of events as HubSpot deals, one result per event."""

    ORDERS = bodies.ORDERS
    CARTS = bodies.CHECKOUTS
    OBJECTS = "deals"
    NO_KIND = "HubSpot's deals take no {0} events"
    NO_ORDER = "HubSpot has no deal for order {0} (its placed order was not sent yet)"
    NO_SCOPE = (
        "the HubSpot private app lacks a scope for deals or line items ({0}); grant "
        f"{bodies.SCOPES} and their .read scopes under Settings > Integrations > "
        "Private apps"
    )

    def __init__(self, api: HubSpotApi, config: HubSpotConfig) -> None:
        super().__init__(api)
        self._settings = config.events
        self._group = config.property_group
        self._names = bodies.names(config.events)
        self._prepared = False

    def names(self) -> Mapping[EventKind, str]:
        return self._names

    def order(self, event: Event) -> dict[str, str]:
        return bodies.order_deal(event, self._settings)

    def status(self, event: Event) -> dict[str, str]:
        return bodies.order_state(event, self._settings)

    def cart(self, event: Event) -> dict[str, str]:
        return bodies.checkout_deal(event, self._settings)

    def _close(self, events: Sequence[Event]) -> dict[str, EventResult]:
        """Converted or expired checkouts' deals archived, or moved to their stage."""
        if not events or self._settings.closed_checkout_stage is None:
            return super()._close(events)
        existing = self._reads.find(self.CARTS, events)
        results = {
            e.key: result(e, Outcome.OK, "no deal to close")
            for e in events
            if (e.source, e.record_id) not in existing
        }
        there = [e for e in events if e.key not in results]
        stage = bodies.closed_checkout(self._settings)
        moved = self._writer.update(self.CARTS, there, {}, existing, lambda _: stage, "")
        return {**results, **moved}

    # -- crmsync's deal properties ---------------------------------------------------

    def _prepare(self) -> None:
        """crmsync's deal properties, created where missing (once per run)."""
        if self._prepared:
            return
        existing = _properties(self._api)
        problems = _conflicts(existing)
        if problems:
            raise ConfigError(
                "; ".join(problems),
                key="events.objects",
                hint="rename or delete those deal properties in HubSpot",
            )
        missing = [name for name in bodies.OWN_PROPERTIES if name not in existing]
        if missing:
            self._group_made()
        for name in missing:
            try:
                self._api.document("POST", PROPERTIES, bodies.property_body(name, self._group))
            except HubSpotApiError as exc:
                if exc.status != CONFLICT:  # made meanwhile, or by a try whose answer was lost
                    raise
        self._prepared = True

    def _group_made(self) -> None:
        groups = self._api.document("GET", GROUPS).get("results") or ()
        if any(isinstance(g, dict) and g.get("name") == self._group for g in groups):
            return
        body = {"name": self._group, "label": self._group, "displayOrder": -1}
        try:
            self._api.document("POST", GROUPS, body)
        except HubSpotApiError as exc:
            if exc.status != CONFLICT:
                raise


def _properties(api: HubSpotApi) -> dict[str, dict[str, Any]]:
    """The account's deal properties by name."""
    found = api.document("GET", PROPERTIES).get("results") or ()
    return {str(p.get("name")): p for p in found if isinstance(p, dict)}


def _conflicts(existing: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """crmsync's deal properties the account holds with another type."""
    problems = []
    for name, (_, kind, _field) in bodies.OWN_PROPERTIES.items():
        found = existing.get(name)
        if found is not None and found.get("type") != kind:
            problems.append(
                f"HubSpot deal property {name!r} is of type {found.get('type')!r}; crmsync "
                f"writes {kind} values there"
            )
    return problems


# -- crmsync check -----------------------------------------------------------------


def deal_checks(api: HubSpotApi, config: HubSpotConfig) -> list[Check]:
    """With deals: the configured pipelines and stages exist, crmsync's deal properties
    fit (or are created by the first run), and the write scopes deals need."""
    checks = [_stages(api, config), _deal_properties(api)]
    checks.append(
        Check(
            "deal write scopes",
            True,
            f"{bodies.SCOPES} cannot be tried without writing; a missing one stops the "
            "first run's events with a 403 naming it",
        )
    )
    return checks


def _stages(api: HubSpotApi, config: HubSpotConfig) -> Check:
    settings = config.events
    try:
        found = api.document("GET", PIPELINES).get("results") or ()
    except HubSpotAccessError as exc:
        return Check("deal pipelines", False, f"{exc.message}: grant crm.objects.deals.read")
    except ConnectorError as exc:
        return Check("deal pipelines", False, str(exc))
    stages = {
        str(p.get("id")): [str(s.get("id")) for s in p.get("stages") or () if not s.get("archived")]
        for p in found
        if isinstance(p, dict) and not p.get("archived")
    }
    wanted = [
        ("events.won_stage", settings.pipeline, settings.won_stage),
        ("events.lost_stage", settings.pipeline, settings.lost_stage),
        ("events.checkout_stage", settings.checkouts_pipeline, settings.checkout_stage),
        (
            "events.closed_checkout_stage",
            settings.checkouts_pipeline,
            settings.closed_checkout_stage,
        ),
    ]
    for key, pipeline, stage in wanted:
        if not stage:
            continue
        if pipeline not in stages:
            known = ", ".join(sorted(stages)) or "none"
            return Check(
                "deal pipelines",
                False,
                f"no deal pipeline {pipeline!r} (for {key}); the account's: {known}",
            )
        if stage not in stages[pipeline]:
            return Check(
                "deal pipelines",
                False,
                f"{key}: no stage {stage!r} in pipeline {pipeline!r}; its stages: "
                f"{', '.join(stages[pipeline])}",
            )
    return Check("deal pipelines", True, "the configured pipelines and stages exist")


def _deal_properties(api: HubSpotApi) -> Check:
    try:
        existing = _properties(api)
    except HubSpotAccessError as exc:
        return Check("scope crm.schemas.deals.read", False, f"{exc.message}: grant it")
    except ConnectorError as exc:
        return Check("deal properties", False, str(exc))
    problems = _conflicts(existing)
    if problems:
        return Check("deal properties", False, "; ".join(problems))
    missing = [name for name in bodies.OWN_PROPERTIES if name not in existing]
    detail = f"{len(bodies.OWN_PROPERTIES) - len(missing)} of crmsync's deal properties exist"
    if missing:
        detail += f"; {', '.join(missing)} are created by the first run with events"
    return Check("deal properties", True, detail)
