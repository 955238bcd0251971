"""One batch of events written as HubSpot CRM objects: the steps both ways of writing
them take (``commerce``: orders and carts; ``deals``), each way saying what its objects
are and what each event writes there.

HubSpot's workflows read objects, not events, so each event becomes a write of the
object it is about: a placed order creates the order's object with its line items, a
fulfilment, cancellation or refund updates it, a started checkout creates the cart's
object, a closed checkout archives it (or, for deals, may move it to a stage); an
ordered product is not taken, its order's line items carry it.

Calls. The core hands up to ``EVENT_BATCH`` events a call of ``push_events``, each with
its facts (``EventFacts``); a batch's line items, created objects, updates and archives
go 100 a call, so a call is partly filled only once per object kind and batch. The reads
(``objects.Lookups``) come on top only where the facts leave them open.

An event whose person HubSpot has no contact for yet is REJECTED, saying so: crmsync's
people push creates contacts, and creates them before the run's events. A backfill's
past placed orders go with their true date, which a workflow filters on (HubSpot has no
flag that keeps workflows off an object); its past started checkouts are not sent. A
missing scope (403) stops the events with the scopes named; HubSpot's day spent
(``DailyLimitReached``) leaves the batch NOT_SENT through the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

from connectors.hubspot.client import HubSpotAccessError, HubSpotApi
from connectors.hubspot.object_writes import NO_CONTACT, ObjectWriter, result
from connectors.hubspot.objects import Found, Lookups, ObjectKind, contact_of, email_of
from crmsync.contract import Outcome
from crmsync.errors import AuthError
from crmsync.events import Event, EventKind, EventResult

EVENT_BATCH = 2000  # events per push_events call: few partly filled calls per batch
STATUS_KINDS = frozenset(
    {EventKind.FULFILLED_ORDER, EventKind.CANCELLED_ORDER, EventKind.REFUNDED_ORDER}
)
PAST_CHECKOUT = "a past checkout: not sent (a workflow would fire)"


class ObjectEvents(ABC):
    """Sends one batch of events as HubSpot objects, one result per event; a subclass
    names its objects and what each event writes on them."""

    ORDERS: ClassVar[ObjectKind]  # what a placed order makes
    CARTS: ClassVar[ObjectKind]  # what a started checkout makes
    OBJECTS: ClassVar[str]  # in the message of an event without an e-mail
    NO_KIND: ClassVar[str]  # an event kind not taken ({0}: the kind)
    NO_ORDER: ClassVar[str]  # a status of an order not there ({0}: the order's id)
    NO_SCOPE: ClassVar[str]  # a 403 ({0}: HubSpot's message)

    def __init__(self, api: HubSpotApi) -> None:
        self._api = api
        self._reads = Lookups(api)
        self._writer = ObjectWriter(api, self._reads)

    @abstractmethod
    def names(self) -> Mapping[EventKind, str]:
        """The kinds taken, named by what each one writes."""

    @abstractmethod
    def order(self, event: Event) -> dict[str, str]:
        """A placed order's object's properties."""

    @abstractmethod
    def status(self, event: Event) -> dict[str, str]:
        """What a fulfilment, cancellation or refund changes on its order's object."""

    @abstractmethod
    def cart(self, event: Event) -> dict[str, str]:
        """A started checkout's object's properties."""

    def push(self, events: Sequence[Event]) -> list[EventResult]:
        try:
            results = self._push(events)
        except HubSpotAccessError as exc:
            if exc.status == 403:
                raise AuthError(self.NO_SCOPE.format(exc.message)) from exc
            raise
        return [results[event.key] for event in events]

    def _prepare(self) -> None:
        """What the account needs before a batch with something to write (once):
        nothing, unless the objects need crmsync's own properties."""
        return None

    def _close(self, events: Sequence[Event]) -> dict[str, EventResult]:
        """Closed checkouts: their objects archived."""
        return self._writer.archive(self.CARTS, events)

    def _push(self, events: Sequence[Event]) -> dict[str, EventResult]:
        results: dict[str, EventResult] = {}
        todo: list[Event] = []
        seen: set[str] = set()
        for event in events:
            if event.key in seen:
                continue  # the same event twice in a batch goes once; both get its result
            seen.add(event.key)
            early = self._screen(event)
            if early is not None:
                results[event.key] = early
            else:
                todo.append(event)
        if not todo:
            return results
        self._prepare()
        placed = [e for e in todo if e.kind is EventKind.PLACED_ORDER]
        started = [e for e in todo if e.kind is EventKind.STARTED_CHECKOUT]
        statuses = [e for e in todo if e.kind in STATUS_KINDS]
        opened = {(e.source, e.record_id) for e in placed}
        unplaced = [  # statuses whose order may be missing: their contact tells why
            e
            for e in statuses
            if (e.source, e.record_id) not in opened
            and not (e.facts is not None and e.facts.record_remote_id)
        ]
        by_email = self._reads.contacts(placed + started + unplaced)
        for event in placed + started:
            if contact_of(event, by_email) is None:
                results[event.key] = result(event, Outcome.REJECTED, NO_CONTACT)
        placed = [e for e in placed if e.key not in results]
        started = [e for e in started if e.key not in results]
        writer = self._writer
        results.update(writer.create(self.ORDERS, placed, by_email, self.order))
        made: Found = {  # the batch's own objects: HubSpot's search may not show them yet
            (e.source, e.record_id): str(results[e.key].remote_id)
            for e in placed
            if results[e.key].outcome is Outcome.OK
        }
        results.update(
            writer.update(self.ORDERS, statuses, by_email, made, self.status, self.NO_ORDER)
        )
        results.update(writer.create(self.CARTS, started, by_email, self.cart))
        results.update(self._close([e for e in todo if e.kind is EventKind.CHECKOUT_CLOSED]))
        return results

    def _screen(self, event: Event) -> EventResult | None:
        """Why an event is answered without a call, or None."""
        if event.kind not in self.names():
            return result(event, Outcome.REJECTED, self.NO_KIND.format(event.kind))
        if event.kind is EventKind.STARTED_CHECKOUT and event.historical:
            return result(event, Outcome.OK, PAST_CHECKOUT)
        needs_contact = event.kind in (EventKind.PLACED_ORDER, EventKind.STARTED_CHECKOUT)
        if needs_contact and not email_of(event):
            message = f"HubSpot's {self.OBJECTS} are associated with a contact by e-mail; none here"
            return result(event, Outcome.REJECTED, message)
        return None
