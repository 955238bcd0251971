"""A segment report as rich tables, for a terminal (or any rich ``Console``)."""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from crmsync.insights import fmt
from crmsync.insights.model import (
    FREQUENCY,
    RECENCY,
    SegmentFigures,
    SegmentReport,
    Slipping,
)


def render_terminal(report: SegmentReport, console: Console) -> None:
    for part in sections(report):
        console.print(part)
        console.print()


def sections(report: SegmentReport) -> list[RenderableType]:
    parts: list[RenderableType] = [_heading(report), _segments(report), _buys(report)]
    parts += [_rfm(report), _rfm_notes(report), _stages(report)]
    parts += [_slipping(report, s) for s in report.slipping]
    return parts


def _heading(report: SegmentReport) -> Text:
    text = Text()
    text.append(f"pipeline {report.pipeline}", style="bold")
    text.append(f": segment report as of {fmt.when(report.as_of)}, money in {report.currency}")
    base = report.baseline
    if base is None:
        text.append("\nno earlier run: movement (joined, left) is shown from the next run on")
    else:
        run = f" (run #{base.run_id})" if base.run_id is not None else ""
        text.append(f"\njoined and left: since the last run's planning{run} ")
        text.append(f"as of {fmt.when(base.as_of)}, {base.people:,} people then")
        if report.left_everyone:
            text.append(f"; {report.left_everyone:,} of them are nobody now")
    return text


def _segments(report: SegmentReport) -> Table:
    table = Table(title="Segments", title_justify="left", show_edge=False)
    table.add_column("segment")
    for name in ("people", "revenue", "share", "AOV", "orders/person", "joined", "left"):
        table.add_column(name, justify="right")
    for s in (report.everyone, *report.segments):
        table.add_row(
            s.name,
            fmt.count(s.people),
            fmt.money(s.revenue),
            fmt.percent(s.share),
            fmt.money(s.aov),
            fmt.ratio(s.orders_per_person),
            fmt.moved(s.joined, "+"),
            fmt.moved(s.left, "-"),
            style="bold" if s is report.everyone else None,
            end_section=s is report.everyone,
        )
    table.caption = "segments overlap: their shares of revenue do not add up to 100 %"
    return table


def _buys(report: SegmentReport) -> Table:
    table = Table(title="What each segment buys", title_justify="left", show_edge=False)
    table.add_column("segment")
    table.add_column("top categories (people)")
    table.add_column("top products (revenue)")
    for s in (report.everyone, *report.segments):
        if s.people:
            table.add_row(s.name, _categories(s), _products(s))
    return table


def _categories(s: SegmentFigures) -> str:
    return "\n".join(f"{c.name} ({c.people:,})" for c in s.categories) or fmt.DASH


def _products(s: SegmentFigures) -> str:
    return "\n".join(f"{p.name} ({fmt.money(p.revenue)})" for p in s.products) or fmt.DASH


def _rfm(report: SegmentReport) -> Table:
    grid = report.rfm
    table = Table(title="RFM grid: people", title_justify="left", show_edge=False)
    table.add_column("recency \\ frequency")
    for f in FREQUENCY:
        table.add_column(f"F{f}", justify="right")
    for r in reversed(RECENCY):
        table.add_row(f"R{r}", *(fmt.count(grid.people.get((r, f), 0)) for f in FREQUENCY))
    return table


def _rfm_notes(report: SegmentReport) -> Text:
    grid = report.rfm
    labels = ", ".join(f"{k} {v:,}" for k, v in sorted(grid.labels.items()))
    return Text(f"no counted order (no RFM score): {grid.no_orders:,}\nby RFM label: {labels}")


def _stages(report: SegmentReport) -> Text:
    stages = ", ".join(f"{k} {v:,}" for k, v in report.stages.items())
    return Text(f"lifecycle: {stages}")


def _slipping(report: SegmentReport, s: Slipping) -> Table:
    title = (
        f"{s.stage.replace('_', ' ')}: {s.people:,} people, past value {fmt.money(s.value)}"
        f" {report.currency}"
    )
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column("person")
    for name in ("orders", "value", "last order", "days since"):
        table.add_column(name, justify="right")
    for p in s.top:
        table.add_row(
            p.label,
            fmt.count(p.orders),
            fmt.money(p.value),
            fmt.day(p.last_order_at),
            fmt.count(p.days_since),
        )
    return table
