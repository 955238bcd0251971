"""What a segment report holds: figures only, no rendering and no I/O.

Money is a ``Decimal`` in the pipeline's currency, exact to its minor unit (the profile
builder's amounts, summed); ``as_dict`` gives the same figures for ``--json``, money as
strings so no digit is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from crmsync.profile_scope import ProfileContext

RECENCY = FREQUENCY = (1, 2, 3, 4, 5)  # the RFM scores (5: most recent, most frequent)
STAGES = ("prospect", "new", "active", "at_risk", "lapsed")  # profiles' lifecycle_stage
SLIPPING = ("at_risk", "lapsed")

# one bought line as the state hands it over: product (or sku), category, units, revenue
# in minor units (quantity x unit price - line discount)
Line = tuple[str | None, str | None, int, int]


@dataclass(frozen=True, slots=True)
class PersonRows:
    """One person's rows, as the state database gives them to a report.

    ``slots``: the profile streams' groups, as ``ProfileBuilder.build`` takes them;
    ``lines``: the order lines of the orders a profile counts; ``before``: the person's
    segments at the last planning (empty when they were in none, or not planned then).
    """

    key: str
    slots: Sequence[Any]
    lines: Sequence[Line]
    before: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Baseline:
    """The pipeline's last planning, which movement is counted from."""

    as_of: datetime
    people: int
    run_id: int | None  # the last run that finished planning, when the runs table says


class ReportSource(Protocol):
    """What a report reads: implemented over the state database (``state.report_reads``)."""

    def people(self, ctx: ProfileContext, pipeline: str) -> Iterable[PersonRows]: ...

    def baseline(self, pipeline: str) -> Baseline | None: ...


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    people: int  # members who bought it
    units: int
    revenue: Decimal  # line revenue: quantity x unit price - line discount


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    people: int  # members who bought in it (the profile's ``categories``)


@dataclass(frozen=True, slots=True)
class SegmentFigures:
    """One segment (or everyone): who is in it, what they spent and bought, who moved."""

    name: str
    rule: str
    description: str
    people: int
    buyers: int  # people with at least one counted order
    orders: int
    revenue: Decimal  # the members' total_spent
    share: float | None  # of everyone's revenue (segments overlap: shares do not add up)
    aov: Decimal | None  # revenue / orders, to the minor unit
    orders_per_person: float | None
    products: tuple[Product, ...]
    categories: tuple[Category, ...]
    joined: int | None  # None: no earlier planning to compare with
    left: int | None


@dataclass(frozen=True, slots=True)
class RfmGrid:
    """People (and their revenue) per recency x frequency score; ``no_orders`` holds
    those without a counted order (no score), so every person is in exactly one cell."""

    people: dict[tuple[int, int], int]
    revenue: dict[tuple[int, int], Decimal]
    no_orders: int
    labels: dict[str, int]  # per rfm_label

    def total(self) -> int:
        return sum(self.people.values()) + self.no_orders


@dataclass(frozen=True, slots=True)
class SlippingPerson:
    label: str  # e-mail, else a customer id or name; never a phone number
    orders: int
    value: Decimal  # total_spent
    last_order_at: datetime | None
    days_since: int | None


@dataclass(frozen=True, slots=True)
class Slipping:
    """People at one lifecycle stage (at_risk, lapsed) and the value they brought."""

    stage: str
    people: int
    value: Decimal
    top: tuple[SlippingPerson, ...]  # the most valuable first


@dataclass
class SegmentReport:
    pipeline: str
    currency: str
    as_of: datetime
    baseline: Baseline | None
    everyone: SegmentFigures
    segments: list[SegmentFigures]
    rfm: RfmGrid
    stages: dict[str, int]
    slipping: list[Slipping] = field(default_factory=list)
    left_everyone: int = 0  # planned last time, nobody now (their records went away)

    def as_dict(self) -> dict[str, Any]:
        baseline = self.baseline
        return {
            "pipeline": self.pipeline,
            "currency": self.currency,
            "as_of": self.as_of.isoformat(),
            "since": None
            if baseline is None
            else {
                "as_of": baseline.as_of.isoformat(),
                "people": baseline.people,
                "run_id": baseline.run_id,
                "nobody_now": self.left_everyone,
            },
            "everyone": _segment(self.everyone),
            "segments": [_segment(s) for s in self.segments],
            "rfm": {
                "cells": [
                    {
                        "recency": r,
                        "frequency": f,
                        "people": self.rfm.people.get((r, f), 0),
                        "revenue": str(self.rfm.revenue.get((r, f), Decimal(0))),
                    }
                    for r in RECENCY
                    for f in FREQUENCY
                ],
                "no_orders": self.rfm.no_orders,
                "labels": dict(self.rfm.labels),
            },
            "lifecycle": dict(self.stages),
            "slipping": [
                {
                    "stage": s.stage,
                    "people": s.people,
                    "value": str(s.value),
                    "top": [
                        {
                            "person": p.label,
                            "orders": p.orders,
                            "value": str(p.value),
                            "last_order_at": p.last_order_at.isoformat()
                            if p.last_order_at
                            else None,
                            "days_since_last_order": p.days_since,
                        }
                        for p in s.top
                    ],
                }
                for s in self.slipping
            ],
        }


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _segment(s: SegmentFigures) -> dict[str, Any]:
    return {
        "name": s.name,
        "rule": s.rule,
        "description": s.description,
        "people": s.people,
        "buyers": s.buyers,
        "orders": s.orders,
        "revenue": str(s.revenue),
        "share_of_revenue": s.share,
        "avg_order_value": _money(s.aov),
        "orders_per_person": s.orders_per_person,
        "top_products": [
            {"name": p.name, "people": p.people, "units": p.units, "revenue": str(p.revenue)}
            for p in s.products
        ],
        "top_categories": [{"name": c.name, "people": c.people} for c in s.categories],
        "joined": s.joined,
        "left": s.left,
    }
