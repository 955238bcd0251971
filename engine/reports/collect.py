"""Adds people up into a segment report, one person at a time (bounded memory).

Every figure comes from what a run computes itself: the profile from ``ProfileBuilder``
(spend, orders, categories, RFM scores, lifecycle stage) and the memberships from the
pipeline's ``SegmentSet``; only the products, which a profile does not keep, come from
the order lines of the orders the profile counts. Nothing is computed a second way.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from crmsync.config import PipelineSpec
from crmsync.incremental import floor_ms
from crmsync.insights.model import (
    SLIPPING,
    STAGES,
    Baseline,
    Category,
    Line,
    PersonRows,
    Product,
    ReportSource,
    RfmGrid,
    SegmentFigures,
    SegmentReport,
    Slipping,
    SlippingPerson,
)
from crmsync.profile_scope import ProfileContext
from engine.profiles import ProfileBuilder

TOP = 5  # products and categories per segment
EVERYONE = "everyone"


def report_context(spec: PipelineSpec, as_of: datetime) -> ProfileContext:
    """The profile context a run of ``spec`` at ``as_of`` would use (``plan_run``)."""
    sources = tuple(s.name for s in spec.sources)
    return ProfileContext(
        sources=sources,
        consent_scopes=sources + tuple(d.name for d in spec.destinations),
        currency=spec.currency,
        as_of_ms=floor_ms(as_of),
        settings=spec.settings.profile,
    )


def segment_report(
    spec: PipelineSpec,
    source: ReportSource,
    as_of: datetime | None = None,
    *,
    descriptions: Mapping[str, str] | None = None,
    people: int = 10,
) -> SegmentReport:
    """The report of one pipeline as of ``as_of`` (default now), read from ``source``;
    ``people``: how many of the most valuable at-risk and lapsed people to name."""
    when = (as_of or datetime.now(UTC)).astimezone(UTC)
    ctx = report_context(spec, when)
    collector = Collector(ctx, spec.segments, when, source.baseline(spec.name), people)
    collector.add_all(source.people(ctx, spec.name))
    return collector.result(spec.name, descriptions or {})


@dataclass
class _Tally:
    """One segment's running sums."""

    people: int = 0
    buyers: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)
    joined: int = 0
    left: int = 0
    categories: dict[str, int] = field(default_factory=dict)
    # per product: people, units, revenue (minor units)
    products: dict[str, list[int]] = field(default_factory=dict)

    def add(self, profile: dict[str, Any], bought: Mapping[str, tuple[int, int]] | None) -> None:
        self.people += 1
        count = profile["orders_count"]
        if count:
            self.buyers += 1
            self.orders += count
        self.revenue += profile["total_spent"]
        for name in profile["categories"]:
            self.categories[name] = self.categories.get(name, 0) + 1
        if bought:
            for name, (units, revenue) in bought.items():
                kept = self.products.get(name)
                if kept is None:
                    self.products[name] = [1, units, revenue]
                else:
                    kept[0] += 1
                    kept[1] += units
                    kept[2] += revenue


class Collector:
    """Builds each person's profile and segments and adds them to the report's sums."""

    def __init__(
        self,
        ctx: ProfileContext,
        segments: Any,  # crmsync.segments.SegmentSet
        as_of: datetime,
        baseline: Baseline | None,
        people: int,
    ) -> None:
        self.ctx, self.segments, self.as_of = ctx, segments, as_of
        self.baseline, self.named = baseline, people
        self.builder = ProfileBuilder(ctx)
        self.everyone = _Tally()
        self.tallies = {name: _Tally() for name in segments.names}
        self.rfm_people: dict[tuple[int, int], int] = {}
        self.rfm_revenue: dict[tuple[int, int], Decimal] = {}
        self.no_orders = 0
        self.labels: dict[str, int] = {}
        self.stages: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.slipping_value = {stage: Decimal(0) for stage in SLIPPING}
        # per stage, a min-heap of the most valuable: (value, -arrival, person); people
        # arrive in key order, so among equal values the first key keeps its place
        self.arrived = 0
        self.top: dict[str, list[tuple[Decimal, int, SlippingPerson]]] = {
            stage: [] for stage in SLIPPING
        }
        self.left_everyone = 0

    def add_all(self, people: Iterable[PersonRows]) -> None:
        for person in people:
            self.add(person)

    def add(self, person: PersonRows) -> None:
        profile = self.builder.build(person.key, list(person.slots))
        if profile is None:  # planned last time, nobody now: they left every segment
            if person.before:
                self.left_everyone += 1
            for name in person.before:
                tally = self.tallies.get(name)
                if tally is not None:
                    tally.left += 1
            return
        member_of = self.segments.evaluate(profile, self.as_of)
        bought = self._bought(person.lines)
        self.everyone.add(profile, bought)
        for name in member_of:
            self.tallies[name].add(profile, bought)
        before = set(person.before)
        for name in member_of:
            if name not in before:
                self.tallies[name].joined += 1
        for name in before.difference(member_of):
            tally = self.tallies.get(name)
            if tally is not None:  # a segment since removed from the configuration: not shown
                tally.left += 1
        self._rfm(profile)
        self._stage(profile)

    def _bought(self, lines: Iterable[Line]) -> dict[str, tuple[int, int]]:
        bought: dict[str, tuple[int, int]] = {}
        for product, category, units, revenue in lines:
            name = product or category or "(unnamed)"
            kept = bought.get(name)
            bought[name] = (
                (units, revenue) if kept is None else (kept[0] + units, kept[1] + revenue)
            )
        return bought

    def _rfm(self, profile: dict[str, Any]) -> None:
        r, f = profile["rfm_recency"], profile["rfm_frequency"]
        if r is None or f is None:
            self.no_orders += 1
        else:
            cell = (r, f)
            self.rfm_people[cell] = self.rfm_people.get(cell, 0) + 1
            self.rfm_revenue[cell] = self.rfm_revenue.get(cell, Decimal(0)) + profile["total_spent"]
        label = profile["rfm_label"]
        self.labels[label] = self.labels.get(label, 0) + 1

    def _stage(self, profile: dict[str, Any]) -> None:
        stage = profile["lifecycle_stage"]
        self.stages[stage] = self.stages.get(stage, 0) + 1
        if stage not in self.top:
            return
        value = profile["total_spent"]
        self.slipping_value[stage] += value
        heap = self.top[stage]
        if self.named <= 0:
            return
        self.arrived += 1
        item = (value, -self.arrived, _slipping_person(profile))
        if len(heap) < self.named:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)

    def result(self, pipeline: str, descriptions: Mapping[str, str]) -> SegmentReport:
        total = self.everyone.revenue
        moved = self.baseline is not None
        rules = self.segments.rules
        everyone = self._figures(EVERYONE, "", "all people", self.everyone, total, moved=False)
        segments = [
            self._figures(name, rules[name], descriptions.get(name, ""), tally, total, moved)
            for name, tally in self.tallies.items()
        ]
        slipping = [
            Slipping(
                stage,
                self.stages.get(stage, 0),
                self.slipping_value[stage] + self.builder.zero,
                tuple(item[2] for item in sorted(self.top[stage], reverse=True)),
            )
            for stage in SLIPPING
        ]
        return SegmentReport(
            pipeline=pipeline,
            currency=self.ctx.currency,
            as_of=self.as_of,
            baseline=self.baseline,
            everyone=everyone,
            segments=segments,
            rfm=RfmGrid(dict(self.rfm_people), dict(self.rfm_revenue), self.no_orders, self.labels),
            stages=self.stages,
            slipping=slipping,
            left_everyone=self.left_everyone,
        )

    def _figures(
        self, name: str, rule: str, description: str, t: _Tally, total: Decimal, moved: bool
    ) -> SegmentFigures:
        money = self.builder.money
        aov = None
        if t.orders:
            aov = (t.revenue / t.orders).quantize(self.builder.scale, rounding=ROUND_HALF_EVEN)
        products = sorted(t.products.items(), key=lambda item: (-item[1][2], item[0]))[:TOP]
        categories = sorted(t.categories.items(), key=lambda item: (-item[1], item[0]))[:TOP]
        return SegmentFigures(
            name=name,
            rule=rule,
            description=description,
            people=t.people,
            buyers=t.buyers,
            orders=t.orders,
            revenue=t.revenue + self.builder.zero,  # to the minor unit, also when nobody
            share=float(t.revenue / total) if total else None,
            aov=aov,
            orders_per_person=t.orders / t.people if t.people else None,
            products=tuple(Product(n, p, u, money(r)) for n, (p, u, r) in products),
            categories=tuple(Category(n, p) for n, p in categories),
            joined=t.joined if moved else None,
            left=t.left if moved else None,
        )


def _slipping_person(profile: dict[str, Any]) -> SlippingPerson:
    return SlippingPerson(
        label=person_label(profile),
        orders=profile["orders_count"],
        value=profile["total_spent"],
        last_order_at=profile["last_order_at"],
        days_since=profile["days_since_last_order"],
    )


def person_label(profile: dict[str, Any]) -> str:
    """How a report names a person: the e-mail, else the customer id a source gave (an
    ``s:`` key), else the name; never the phone number a ``p:`` key holds."""
    email = profile.get("email")
    if email:
        return str(email)
    key = str(profile["person_key"])
    if key.startswith("s:"):
        return f"customer {key[2:]}"
    name = profile.get("full_name")
    return f"{name} (no e-mail)" if name else "(no e-mail)"
