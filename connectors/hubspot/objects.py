"""Events written as HubSpot CRM objects: what both ways of writing them (``commerce``:
orders and carts; ``deals``) share to name an object kind, and the reads a write needs
first, made only when the event's facts (``crmsync.events.EventFacts``) leave them open.

- The contact an object is associated with: the people's ledger's id when the core
  hands it over; else a batch read by e-mail (100 addresses a call).
- An object crmsync may have made already: HubSpot's batch upsert needs a property with
  unique values, and the properties that hold the source's order or cart id are plain
  text, so crmsync finds its objects by a search on that property (``IN``, 100 values a
  call), beside the one that holds the source's name. An id the facts name (the answer
  to the record's placed order or started checkout) needs no search. Only a record sent
  before (a crash, a lost answer, a retry) may have made its object, so only those are
  searched for; a record never sent from this state database cannot be there, unless
  the database has no history with this HubSpot account at all (a first sync, a lost or
  replaced database): then one probe per object type and source asks whether HubSpot
  holds any object of crmsync's from that source, and if it does, every record of that
  type is searched for, as without facts. A backfill claims no record never sent, so it
  searches for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connectors.hubspot.client import HubSpotApi
from crmsync.events import Event

PER_CALL = 100  # inputs per batch call, addresses per contact read, values per IN filter
SEARCH_PAGE = 200  # results per search page (HubSpot's most)
Found = dict[tuple[str, str], str]  # (source, external id) -> HubSpot object id
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ObjectKind:
    """One kind of object crmsync makes from events, and how it finds them again."""

    name: str  # the object type in HubSpot's paths: "orders", "carts", "deals"
    noun: str  # in messages: "order", "cart", "deal"
    id_property: str  # holds the source's order or cart id
    store_property: str  # holds the source's name: two sources' order 1001 stay apart
    to_contact: int  # association type id, from this object to a contact
    to_line_item: int  # ... to a line item


def chunks(items: Sequence[T], size: int = PER_CALL) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def email_of(event: Event) -> str:
    return (event.email or "").strip().lower()


def person_id(event: Event) -> str | None:
    """The person's contact id from the people's ledger, when the core handed it over."""
    return event.facts.person_remote_id if event.facts is not None else None


def contact_of(event: Event, by_email: Mapping[str, str]) -> str | None:
    """The contact an event's object is associated with: the person's id from the
    people's ledger, else the one read by e-mail."""
    return person_id(event) or by_email.get(email_of(event))


class Lookups:
    """HubSpot's reads for one destination; the probes' answers are kept for its life."""

    def __init__(self, api: HubSpotApi) -> None:
        self._api = api
        self._holds: dict[tuple[str, str], bool] = {}  # (object type, source) -> any there

    def contacts(self, events: Iterable[Event]) -> dict[str, str]:
        """e-mail -> contact id, read for the events whose person's id is not known."""
        return self.ids_by_email(email_of(e) for e in events if not person_id(e))

    def ids_by_email(self, emails: Iterable[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(sorted(set(emails) - {""})):
            found.update(self._api.ids_by_email(chunk))
        return found

    def may_exist(self, kind: ObjectKind, event: Event) -> bool:
        """Whether crmsync's ``kind`` object for the event's record may be in HubSpot."""
        facts = event.facts
        if facts is None or not facts.record_never_sent:
            return True
        return facts.no_history and self._holds_any(kind, event.source)

    def find(self, kind: ObjectKind, events: Sequence[Event]) -> Found:
        """The objects of ``kind`` crmsync made for these events' records: the ids the
        facts name, and a search for those that may exist and are not named."""
        found: Found = {}
        wanted: set[str] = set()
        for event in events:
            known = event.facts.record_remote_id if event.facts is not None else None
            if known:
                found[(event.source, event.record_id)] = known
            elif self.may_exist(kind, event):
                wanted.add(event.record_id)
        for chunk in chunks(sorted(wanted)):
            for item in self._search(kind, list(chunk)):
                properties = item.get("properties") or {}
                key = (
                    str(properties.get(kind.store_property)),
                    str(properties.get(kind.id_property)),
                )
                found.setdefault(key, str(item.get("id")))
        return found

    def _holds_any(self, kind: ObjectKind, source: str) -> bool:
        """Whether HubSpot holds any object of this type from ``source``: one result is
        enough (for deals, an order's deal or a checkout's: either may mean a former
        database wrote there, so both are searched for)."""
        if (kind.name, source) not in self._holds:
            from_source = {"propertyName": kind.store_property, "operator": "EQ", "value": source}
            body = {
                "filterGroups": [{"filters": [from_source]}],
                "properties": [kind.store_property],
                "limit": 1,
            }
            page = self._api.document("POST", f"/crm/v3/objects/{kind.name}/search", body)
            self._holds[(kind.name, source)] = bool(page.get("results"))
        return self._holds[(kind.name, source)]

    def _search(self, kind: ObjectKind, ids: list[str]) -> Iterator[dict[str, Any]]:
        """The objects whose external id is one of ``ids`` (at most 100), page by page."""
        among = {"propertyName": kind.id_property, "operator": "IN", "values": ids}
        after: str | None = None
        while True:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": [among]}],
                "properties": [kind.id_property, kind.store_property],
                "limit": SEARCH_PAGE,
            }
            if after is not None:
                body["after"] = after
            page = self._api.document("POST", f"/crm/v3/objects/{kind.name}/search", body)
            yield from page.get("results") or ()
            following = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not following or following == after:
                return
            after = str(following)
