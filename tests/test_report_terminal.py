"""`crmsync report` on a terminal: rich tables naming every segment with its figures,
the RFM grid and the most valuable people at risk and lapsed."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from engine.reports import segment_report
from engine.reports.terminal import render_terminal
from engine.resolve import load_config
from state.report_reads import ReportReader
from state.store import Store
from tests.report_demo import AS_OF, Demo, demo_state


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return demo_state(tmp_path_factory.mktemp("terminal"))


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows by their first cell (rich draws cells between │ bars)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[0]:
            rows.setdefault(cells[0], cells[1:])
    return rows


def test_tables_show_every_segment_with_its_figures(demo: Demo) -> None:
    result = demo.cli("report", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    data = demo.report_json("--as-of", AS_OF)
    rows = _rows(result.stdout)
    for s in [data["everyone"], *data["segments"]]:
        people, revenue, _share, aov = rows[s["name"]][:4]
        assert int(people.replace(",", "")) == s["people"], s["name"]
        assert Decimal(revenue.replace(",", "")) == Decimal(s["revenue"]), s["name"]
        want_aov = s["avg_order_value"]
        assert aov == ("–" if want_aov is None else f"{Decimal(want_aov):,}"), s["name"]
    text = result.stdout
    assert "since the last run's planning (run #1)" in text
    for heading in ("Segments", "What each segment buys", "RFM grid", "at risk:", "lapsed:"):
        assert heading in text
    grid = [rows[f"R{r}"] for r in range(1, 6)]
    cells = sum(int(c.replace(",", "")) for row in grid for c in row[:5])
    assert cells + data["rfm"]["no_orders"] == data["everyone"]["people"]
    top = data["slipping"][0]["top"][0]
    assert top["person"] in text  # the most valuable person at risk, by e-mail


def test_render_terminal_on_a_recorded_console(demo: Demo) -> None:
    config = load_config(str(demo.config))
    spec = config.pipelines["demo"]
    store = Store(config.state_url, read_only=True)
    try:
        with ReportReader(store.engine) as reader:
            report = segment_report(spec, reader, datetime.fromisoformat(AS_OF), people=3)
    finally:
        store.close()
    console = Console(record=True, width=110, color_system=None)
    render_terminal(report, console)
    text = console.export_text()
    rows = _rows(text)
    assert set(spec.segments.names) <= set(rows)
    assert rows["vip"][0] == f"{next(s.people for s in report.segments if s.name == 'vip'):,}"
    # three people named per stage, the most valuable first
    named = [p.label for s in report.slipping for p in s.top]
    assert len(named) == 6 and all(name in text for name in named)
    assert "2026-11-01 09:00 UTC" in text


def test_a_pipeline_never_run_is_reported_without_movement(tmp_path: Path) -> None:
    demo = demo_state(tmp_path, command="plan")
    result = demo.cli("report", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert "no earlier run" in result.stdout
    assert _rows(result.stdout)["vip"][5:7] == ["–", "–"]
