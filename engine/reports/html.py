"""A segment report as one self-contained HTML file: tables and inline SVG charts.

The charts are drawn by pygal as SVG inside the page, with its tooltip script left out
(``js=[]``), so the file opens without network access: no script, style sheet, font or
image is fetched from anywhere. People are named by e-mail (or a customer id, or a name);
phone numbers never appear.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape
from typing import Any

import pygal  # type: ignore[import-untyped]
from pygal.style import Style  # type: ignore[import-untyped]

from crmsync.insights import fmt
from crmsync.insights.model import (
    FREQUENCY,
    RECENCY,
    SegmentFigures,
    SegmentReport,
    Slipping,
)

_STYLE = Style(
    background="white",
    plot_background="white",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#777",
    colors=("#3b6ea8", "#2e9c6a", "#c0504d", "#e0a030", "#7a5ba8"),
    font_family="system-ui, sans-serif",
    value_font_size=11,
    label_font_size=11,
    major_label_font_size=11,
    title_font_size=14,
)

_MOVES_STYLE = Style(**{**_STYLE.to_dict(), "colors": ("#2e9c6a", "#c0504d")})

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
th { text-align: left; background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.everyone td { font-weight: bold; background: #fafafa; }
.note { color: #666; font-size: 0.9rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.chart { flex: 1 1 480px; min-width: 0; }
.chart svg { width: 100%; height: auto; }
table.rfm td { width: 4.5rem; text-align: center; }
"""


def render_html(reports: Sequence[SegmentReport]) -> str:
    """One page for every pipeline's report."""
    title = "crmsync segment report: " + ", ".join(r.pipeline for r in reports)
    body = "\n".join(_pipeline(r) for r in reports)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _pipeline(report: SegmentReport) -> str:
    base = report.baseline
    if base is None:
        since = "No earlier run: joined and left are shown from the next run on."
    else:
        run = f" (run #{base.run_id})" if base.run_id is not None else ""
        since = (
            f"Joined and left: since the last run's planning{run} as of "
            f"{fmt.when(base.as_of)}, when it covered {base.people:,} people."
        )
    parts = [
        f'<section class="pipeline" data-pipeline="{escape(report.pipeline)}">',
        f"<h1>Pipeline {escape(report.pipeline)}</h1>",
        f'<p class="note">As of {fmt.when(report.as_of)}; money in '
        f"{escape(report.currency)}. {escape(since)}</p>",
        _charts(report),
        "<h2>Segments</h2>",
        _segment_table(report),
        '<p class="note">Revenue: the members\' spend on counted orders (cancelled and '
        "refunded left out); AOV: revenue per order; segments overlap, so their shares of "
        "revenue do not add up to 100 %.</p>",
        "<h2>What each segment buys</h2>",
        _buys_table(report),
        "<h2>RFM grid</h2>",
        _rfm_table(report),
        "<h2>Lifecycle</h2>",
        _lifecycle(report),
        *(_slipping(report, s) for s in report.slipping),
        "</section>",
    ]
    return "\n".join(parts)


def _chart(kind: Any, title: str, rows: int, style: Any = _STYLE, **config: Any) -> Any:
    settings: dict[str, Any] = {
        "js": [],  # pygal's tooltip script lives on a CDN: none, so no network is needed
        "disable_xml_declaration": True,
        "style": style,
        "width": 560,
        "height": max(220, 60 + 26 * rows),
        "show_legend": False,
        "print_values": True,
        "print_zeroes": False,
        "truncate_label": -1,
        "explicit_size": False,
    }
    chart = kind(**{**settings, **config})
    chart.title = title
    return chart


def _svg(chart: Any) -> str:
    return f'<div class="chart">{chart.render(is_unicode=True)}</div>'


def _compact(value: float) -> str:
    for size, unit in ((1e9, " bn"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


def _charts(report: SegmentReport) -> str:
    # a horizontal bar chart draws its first bar at the bottom: the segments go in
    # reverse, so they read from the top in the tables' order
    shown = list(reversed(report.segments))
    names = [s.name for s in shown]
    people = _chart(pygal.HorizontalBar, "People per segment", len(names))
    people.x_labels = names
    people.add("people", [s.people for s in shown])
    revenue = _chart(
        pygal.HorizontalBar,
        f"Revenue per segment ({report.currency})",
        len(names),
        value_formatter=_compact,
    )
    revenue.x_labels = names
    revenue.add("revenue", [float(s.revenue) for s in shown])
    charts = [_svg(people), _svg(revenue)]
    if report.baseline is not None:
        moves = _chart(
            pygal.HorizontalBar,
            "Joined and left since the last run",
            len(names),
            style=_MOVES_STYLE,
            show_legend=True,
            legend_at_bottom=True,
        )
        moves.x_labels = names
        moves.add("joined", [s.joined or 0 for s in shown])
        moves.add("left", [s.left or 0 for s in shown])
        charts.append(_svg(moves))
    stages = _chart(pygal.Bar, "People per lifecycle stage", 6)
    stages.x_labels = list(report.stages)
    stages.add("people", list(report.stages.values()))
    charts.append(_svg(stages))
    return '<div class="charts">' + "\n".join(charts) + "</div>"


def _cell(text: str, figure: str = "", numeric: bool = True) -> str:
    attrs = f' data-figure="{figure}"' if figure else ""
    cls = ' class="n"' if numeric else ""
    return f"<td{cls}{attrs}>{escape(text)}</td>"


def _segment_table(report: SegmentReport) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "segment",
            "people",
            "revenue",
            "share",
            "AOV",
            "orders / person",
            "joined",
            "left",
            "rule",
        )
    )
    rows = [_segment_row(report.everyone, everyone=True)]
    rows += [_segment_row(s) for s in report.segments]
    return f'<table class="segments"><tr>{head}</tr>\n' + "\n".join(rows) + "</table>"


def _segment_row(s: SegmentFigures, *, everyone: bool = False) -> str:
    cls = ' class="everyone"' if everyone else ""
    rule = s.description or s.rule
    if s.description and s.rule:
        rule = f"{s.description}: {s.rule}"
    return (
        f'<tr{cls} data-segment="{escape(s.name)}">'
        + _cell(s.name, numeric=False)
        + _cell(fmt.count(s.people), "people")
        + _cell(fmt.money(s.revenue), "revenue")
        + _cell(fmt.percent(s.share), "share")
        + _cell(fmt.money(s.aov), "aov")
        + _cell(fmt.ratio(s.orders_per_person), "orders_per_person")
        + _cell(fmt.moved(s.joined, "+"), "joined")
        + _cell(fmt.moved(s.left, "-"), "left")
        + f"<td><code>{escape(rule)}</code></td></tr>"
    )


def _buys_table(report: SegmentReport) -> str:
    rows = []
    for s in (report.everyone, *report.segments):
        if not s.people:
            continue
        categories = "<br>".join(f"{escape(c.name)} ({c.people:,})" for c in s.categories)
        products = "<br>".join(
            f"{escape(p.name)}: {p.units:,} sold, {fmt.money(p.revenue)}" for p in s.products
        )
        rows.append(
            f'<tr data-segment="{escape(s.name)}"><td>{escape(s.name)}</td>'
            f"<td>{categories or fmt.DASH}</td><td>{products or fmt.DASH}</td></tr>"
        )
    head = (
        "<tr><th>segment</th><th>top categories (people who bought)</th>"
        "<th>top products (units, line revenue)</th></tr>"
    )
    return f'<table class="buys">{head}\n' + "\n".join(rows) + "</table>"


def _rfm_table(report: SegmentReport) -> str:
    grid = report.rfm
    most = max(grid.people.values(), default=0) or 1
    head = "<tr><th>recency \\ frequency</th>" + "".join(f"<th>F{f}</th>" for f in FREQUENCY)
    rows = []
    for r in reversed(RECENCY):
        cells = []
        for f in FREQUENCY:
            n = grid.people.get((r, f), 0)
            value = grid.revenue.get((r, f), Decimal(0))
            shade = 0.08 + 0.8 * n / most if n else 0
            cells.append(
                f'<td data-rfm="{r}{f}" title="{escape(fmt.money(value))} {report.currency}"'
                f' style="background: rgba(59,110,168,{shade:.2f})">{n:,}</td>'
            )
        rows.append(f"<tr><th>R{r}</th>{''.join(cells)}</tr>")
    labels = ", ".join(f"{escape(k)} {v:,}" for k, v in sorted(grid.labels.items()))
    return (
        f'<table class="rfm">{head}</tr>\n'
        + "\n".join(rows)
        + "</table>"
        + f'<p class="note">People per recency (R5: most recent) and frequency (F5: most '
        f'orders) score; <span data-figure="no_orders">{grid.no_orders:,}</span> people '
        f"have no counted order. By label: {labels}. Hover a cell for its revenue.</p>"
    )


def _lifecycle(report: SegmentReport) -> str:
    cells = "".join(
        f"<tr><td>{escape(k)}</td>{_cell(fmt.count(v), k)}</tr>" for k, v in report.stages.items()
    )
    return f'<table class="lifecycle"><tr><th>stage</th><th>people</th></tr>{cells}</table>'


def _slipping(report: SegmentReport, s: Slipping) -> str:
    rows = "".join(
        f"<tr><td>{escape(p.label)}</td>{_cell(fmt.count(p.orders))}"
        f"{_cell(fmt.money(p.value))}{_cell(fmt.day(p.last_order_at))}"
        f"{_cell(fmt.count(p.days_since))}</tr>"
        for p in s.top
    )
    head = (
        "<tr><th>person</th><th>orders</th><th>past value</th><th>last order</th>"
        "<th>days since</th></tr>"
    )
    return (
        f"<h2>{escape(s.stage.replace('_', ' ').capitalize())}: {s.people:,} people, past "
        f"value {fmt.money(s.value)} {escape(report.currency)}</h2>"
        f'<table class="slipping" data-stage="{escape(s.stage)}">{head}{rows}</table>'
    )
