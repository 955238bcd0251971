"""Records not synced: which staged source records a run sent nowhere, why, and what to do.

A record is left out for one of a few reasons. The source could not read it
(quarantined, kept in ``quarantine``); or it was staged but its person cannot be
addressed by a destination (the planner's ``invalid`` skip: no e-mail and no phone, only
a phone for a destination that needs an e-mail, an order of a customer never read or
quarantined); or it belongs to nobody (a guest order or cart without an e-mail); or it
is in another currency than the pipeline's, so its amounts are left out (looked for when
the run counts orders in another currency: finding them takes a scan). Each run names
them (``state.not_synced``); `status` and `plan` show the counts per reason, the first
few records of each, and a hint per reason. A person deleted at the source before it
was ever synced is counted by the planner but not named: there is nothing to send.

Pure values only: no I/O here.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Why a staged record was not synced (one per record, since it follows from the
    record's person key; a quarantined record may also have an older version staged)."""

    QUARANTINED = "quarantined"
    NO_IDENTITY = "no_identity"
    NO_EMAIL = "no_email"
    NO_PHONE = "no_phone"
    UNKNOWN_CUSTOMER = "unknown_customer"
    CUSTOMER_QUARANTINED = "customer_quarantined"
    GUEST_NO_EMAIL = "guest_no_email"
    OTHER_CURRENCY = "other_currency"


@dataclass(frozen=True, slots=True)
class Explanation:
    what: str
    hint: str


EXPLANATIONS: dict[Reason, Explanation] = {
    Reason.QUARANTINED: Explanation(
        "the source record could not be read (`status` shows why, under quarantine)",
        "fix or delete the record at the source; it leaves quarantine when it next reads"
        " cleanly, or when a read of the whole stream no longer finds it",
    ),
    Reason.NO_IDENTITY: Explanation(
        "a customer with neither e-mail nor phone, and its orders and carts",
        "add an e-mail or a phone number to the customer at the source",
    ),
    Reason.NO_EMAIL: Explanation(
        "a person with a phone but no e-mail, for a destination that needs an e-mail",
        "add an e-mail to the customer at the source (or map the destination's phone "
        "identity, if it has one)",
    ),
    Reason.NO_PHONE: Explanation(
        "a person with an e-mail but no phone, for a destination that needs a phone",
        "add a phone number to the customer at the source",
    ),
    Reason.UNKNOWN_CUSTOMER: Explanation(
        "an order or cart without an e-mail whose customer id was never read",
        "make the customers stream include that customer (`crmsync backfill --full` "
        "re-reads it), or map the order's or cart's e-mail",
    ),
    Reason.CUSTOMER_QUARANTINED: Explanation(
        "an order or cart without an e-mail whose customer is quarantined",
        "fix the customer's quarantined record at the source; its orders and carts follow",
    ),
    Reason.GUEST_NO_EMAIL: Explanation(
        "an order or cart with neither a customer nor an e-mail: it belongs to nobody",
        "map the checkout e-mail of guest orders and carts, if the platform records one",
    ),
    Reason.OTHER_CURRENCY: Explanation(
        "an order or cart in another currency than the pipeline's: its amounts are left out",
        "set the pipeline's `currency`, or run one pipeline per currency",
    ),
}


@dataclass(frozen=True, slots=True)
class NotSynced:
    """One staged record left out, as the operator finds it at the source."""

    reason: Reason
    source: str
    stream: str
    record_key: str  # the source's id for the record
    person_key: str | None = None
    customer_id: str | None = None  # an order's or cart's customer
    # the destinations that could not address its person; () for a reason that is not
    # about a destination (quarantined, nobody's, another currency)
    destinations: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason.value,
            "source": self.source,
            "stream": self.stream,
            "key": self.record_key,
            "person_key": self.person_key,
            "customer_id": self.customer_id,
            "destinations": list(self.destinations),
        }


@dataclass
class Summary:
    """Counts per reason and the first ``limit`` records of each by source, stream and
    id (code point order), whatever order they are added in: a run that names only
    some records again lists the same first ones as a run that names them all."""

    limit: int
    counts: Counter[str] = field(default_factory=Counter)
    records: dict[str, list[NotSynced]] = field(default_factory=dict)

    def add(self, record: NotSynced) -> None:
        self.counts[record.reason.value] += 1
        kept = self.records.setdefault(record.reason.value, [])
        if len(kept) < self.limit or (kept and _order(record) < _order(kept[-1])):
            bisect.insort(kept, record, key=_order)
            del kept[self.limit :]

    def put(self, reason: Reason, count: int, records: list[NotSynced]) -> None:
        """Sets a reason counted elsewhere (e.g. in SQL) with its first records."""
        self.counts[reason.value] = count
        self.records[reason.value] = records[: self.limit]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """Reasons in ``Reason`` order, each with its count, hint and first records."""
        return {
            "total": self.total,
            "reasons": [
                {
                    "reason": reason.value,
                    "count": self.counts[reason.value],
                    "what": EXPLANATIONS[reason].what,
                    "hint": EXPLANATIONS[reason].hint,
                    "records": [r.as_dict() for r in self.records.get(reason.value, [])],
                }
                for reason in Reason
                if self.counts[reason.value]
            ],
        }


def _order(record: NotSynced) -> tuple[str, str, str]:
    return (record.source, record.stream, record.record_key)
