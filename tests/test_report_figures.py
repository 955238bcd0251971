"""`crmsync report --json` and `--html` on the bundled sample store: every figure the
report shows of a segment (people, revenue, AOV) is what SQL over the state database
gives, the RFM grid covers everyone once, movement is counted against the last run's
segments, and the HTML needs no network and names no phone number."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine.resolve import load_config
from tests.report_demo import (
    AS_OF,
    AS_OF_MS,
    ROOT,
    Demo,
    Expected,
    demo_state,
    expected_figures,
    segment_sizes,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return demo_state(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def expected(demo: Demo) -> tuple[Expected, dict[str, Expected]]:
    return expected_figures(demo.url, AS_OF_MS)


def _segment_names(demo: Demo) -> list[str]:
    return sorted(load_config(str(demo.config)).pipelines["demo"].segments.names)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_figures_match_sql_over_the_state_database(
    demo: Demo, expected: tuple[Expected, dict[str, Expected]]
) -> None:
    everyone, by_segment = expected
    report = demo.report_json("--as-of", AS_OF)
    names = _segment_names(demo)
    assert [s["name"] for s in report["segments"]] == names
    assert len(by_segment) >= 6, "the sample store fills most segments"
    assert report["everyone"]["people"] == everyone.people
    assert Decimal(report["everyone"]["revenue"]) == everyone.revenue
    assert report["everyone"]["orders"] == everyone.orders
    for s in report["segments"]:
        want = by_segment.get(s["name"], Expected())
        assert s["people"] == want.people, s["name"]
        assert s["orders"] == want.orders, s["name"]
        assert Decimal(s["revenue"]) == want.revenue, s["name"]
        aov = want.aov
        assert (Decimal(s["avg_order_value"]) if s["avg_order_value"] else None) == aov
        share = float(want.revenue / everyone.revenue)
        assert s["share_of_revenue"] == pytest.approx(share), s["name"]


def test_rfm_grid_cells_add_up_to_everyone(demo: Demo) -> None:
    report = demo.report_json("--as-of", AS_OF)
    rfm = report["rfm"]
    cells = sum(c["people"] for c in rfm["cells"])
    assert len(rfm["cells"]) == 25
    assert cells > 0 and rfm["no_orders"] > 0
    assert cells + rfm["no_orders"] == report["everyone"]["people"]
    assert sum(rfm["labels"].values()) == report["everyone"]["people"]
    revenue = sum(Decimal(c["revenue"]) for c in rfm["cells"])
    assert revenue == Decimal(report["everyone"]["revenue"])


def test_nobody_moved_as_of_the_last_run(demo: Demo) -> None:
    """As of the last run's own as_of, every person's segments are the ones the run kept:
    the report's evaluation agrees with the run's for each person."""
    report = demo.report_json("--as-of", AS_OF)
    assert report["since"]["as_of"] == AS_OF
    assert report["since"]["people"] == report["everyone"]["people"]
    assert [(s["joined"], s["left"]) for s in report["segments"]] == [(0, 0)] * len(
        report["segments"]
    )


def test_movement_since_the_last_run_is_the_change_in_each_segment(demo: Demo) -> None:
    later = (datetime.fromisoformat(AS_OF) + timedelta(days=75)).isoformat()
    report = demo.report_json("--as-of", later)
    before = segment_sizes(demo.url)
    for s in report["segments"]:
        assert s["people"] - before.get(s["name"], 0) == s["joined"] - s["left"], s["name"]
    moved = {s["name"]: (s["joined"], s["left"]) for s in report["segments"]}
    assert moved["lapsed"][0] > 0  # time alone: last orders age past 180 days
    assert moved["at_risk"][1] > 0  # ... and leave at_risk on the way


def test_at_risk_and_lapsed_people_come_most_valuable_first(demo: Demo) -> None:
    report = demo.report_json("--as-of", AS_OF, "--limit", "4")
    stages = {s["stage"]: s for s in report["slipping"]}
    assert set(stages) == {"at_risk", "lapsed"}
    for stage in stages.values():
        values = [Decimal(p["value"]) for p in stage["top"]]
        assert len(values) == 4
        assert values == sorted(values, reverse=True)
        assert Decimal(stage["value"]) >= sum(values)
        assert report["lifecycle"][stage["stage"]] == stage["people"]


def test_report_reads_and_never_writes_the_state_database(demo: Demo, tmp_path: Path) -> None:
    before = _digest(demo.db)
    assert demo.cli("report", "--as-of", AS_OF).exit_code == 0
    assert demo.cli("report", "--html", str(tmp_path / "r.html")).exit_code == 0
    assert _digest(demo.db) == before


def test_report_without_a_state_database_says_so_and_creates_none(tmp_path: Path) -> None:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    missing = tmp_path / "nowhere" / "state.db"
    config = tmp_path / "config.toml"
    config.write_text(
        example.replace('"sqlite:///var/crmsync.db"', f'"sqlite:///{missing}"'), encoding="utf-8"
    )
    result = Demo(config, missing, f"sqlite:///{missing}").cli("report")
    assert result.exit_code == 3, result.output
    assert "no state database" in result.stderr and "`crmsync run`" in result.stderr
    assert "Traceback" not in result.output
    assert not missing.parent.exists()


# -- the HTML page ----------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects what a check of the page needs: resource references and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.rows: dict[str, dict[str, str]] = {}  # segment -> figure -> text
        self.tags: set[str] = set()
        self._row: str | None = None
        self._figure: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        for name in ("src", "href", "xlink:href", "data", "srcset", "poster"):
            value = found.get(name)
            if value is not None:
                self.references.append((tag, name, value))
        if tag == "table":
            self._table = found.get("class")
        if tag == "tr" and self._table == "segments":
            self._row = found.get("data-segment")
            if self._row is not None:
                self.rows[self._row] = {}
        if tag == "td" and self._row is not None:
            self._figure = found.get("data-figure")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._figure = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._figure is not None:
            self.rows[self._row][self._figure] = data


@pytest.fixture(scope="module")
def page(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Page]]:
    path = tmp_path_factory.mktemp("html") / "report.html"
    result = demo.cli("report", "--as-of", AS_OF, "--html", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the page is the output; the tables are not printed too
    text = path.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    yield text, parsed


def test_html_page_fetches_nothing_from_the_network(page: tuple[str, _Page]) -> None:
    text, parsed = page
    assert "svg" in parsed.tags  # the charts are in the page
    assert text.count("<svg") >= 4
    remote = [r for r in parsed.references if not r[2].startswith("#")]
    assert remote == []
    # no script, style sheet, frame or image element that loads anything
    assert not {"link", "img", "iframe", "object", "embed"} & parsed.tags
    assert re.search(r"<script[^>]*\bsrc\s*=", text) is None
    assert re.search(r"@import|url\(\s*['\"]?(https?:)?//", text) is None


def test_html_shows_every_segment_with_the_sql_figures(
    demo: Demo, page: tuple[str, _Page], expected: tuple[Expected, dict[str, Expected]]
) -> None:
    _, parsed = page
    everyone, by_segment = expected
    names = _segment_names(demo)
    assert sorted(set(parsed.rows) - {"everyone"}) == names
    shown = [("everyone", everyone), *((n, by_segment.get(n, Expected())) for n in names)]
    for name, want in shown:
        row = parsed.rows[name]
        assert int(row["people"].replace(",", "")) == want.people, name
        assert Decimal(row["revenue"].replace(",", "")) == want.revenue, name
        aov = None if row["aov"] == "–" else Decimal(row["aov"].replace(",", ""))
        assert aov == want.aov, name


def test_html_names_no_phone_number(demo: Demo, page: tuple[str, _Page]) -> None:
    text, _ = page
    engine = sa.create_engine(demo.url)
    try:
        with engine.connect() as conn:
            phones: list[Any] = list(
                conn.execute(sa.text("select phone from customers where phone is not null"))
                .scalars()
                .all()
            )
    finally:
        engine.dispose()
    assert len(phones) > 1000
    assert [p for p in phones if p in text] == []
    # nor the national number, spaced or not
    runs = {re.sub(r"\D", "", run) for run in re.findall(r"\d[\d ()-]{8,}\d", text)}
    assert [p for p in phones if re.sub(r"\D", "", p)[2:] in runs] == []


def test_before_any_run_movement_is_unknown_not_zero(tmp_path: Path) -> None:
    """A dry run stages the store but keeps no planning: the report shows every segment,
    and no joined or left figures (there is nothing to count them from)."""
    demo = demo_state(tmp_path, command="plan")
    report = demo.report_json("--as-of", AS_OF)
    assert report["since"] is None
    assert report["everyone"]["people"] > 1000
    assert {(s["joined"], s["left"]) for s in report["segments"]} == {(None, None)}
    path = tmp_path / "r.html"
    assert demo.cli("report", "--html", str(path), "--as-of", AS_OF).exit_code == 0
    text = path.read_text(encoding="utf-8")
    assert "No earlier run" in text
    assert "Joined and left since the last run" not in text


def test_a_person_whose_records_went_away_left_their_segments(demo: Demo, tmp_path: Path) -> None:
    copy = tmp_path / "state.db"
    copy.write_bytes(demo.db.read_bytes())
    url = f"sqlite:///{copy}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            key, segments = conn.execute(
                sa.text(
                    "select person_key, segments from planned where pipeline = 'demo'"
                    " and segments like '%vip%' order by person_key limit 1"
                )
            ).one()
            for table in ("customers", "orders", "carts"):
                conn.execute(sa.text(f"delete from {table} where person_key = :k"), {"k": key})
    finally:
        engine.dispose()
    config = tmp_path / "config.toml"
    config.write_text(
        demo.config.read_text(encoding="utf-8").replace(demo.url, url), encoding="utf-8"
    )
    report = Demo(config, copy, url).report_json("--as-of", AS_OF)
    assert report["since"]["nobody_now"] == 1
    left = {s["name"]: s["left"] for s in report["segments"]}
    assert {n for n, k in left.items() if k} == set(segments.split("\n"))
    assert set(left.values()) == {0, 1}


@pytest.mark.postgres
def test_json_figures_match_sql_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    demo = demo_state(tmp_path, url=postgres_url)
    everyone, by_segment = expected_figures(demo.url, AS_OF_MS)
    report = demo.report_json("--as-of", AS_OF)
    assert report["everyone"]["people"] == everyone.people
    assert Decimal(report["everyone"]["revenue"]) == everyone.revenue
    for s in report["segments"]:
        want = by_segment.get(s["name"], Expected())
        assert (s["people"], Decimal(s["revenue"])) == (want.people, want.revenue), s["name"]
        assert (s["joined"], s["left"]) == (0, 0), s["name"]
    cells = sum(c["people"] for c in report["rfm"]["cells"])
    assert cells + report["rfm"]["no_orders"] == everyone.people


@pytest.mark.postgres
def test_report_on_postgresql_writes_nothing(postgres_url: str, tmp_path: Path) -> None:
    """The report's reads run in read-only transactions: the tables' write counters stay
    where they were."""
    demo = demo_state(tmp_path, url=postgres_url)
    counters = sa.text(
        "select sum(n_tup_ins + n_tup_upd + n_tup_del) from pg_stat_xact_user_tables"
    )
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            marks = sa.text(
                "select (select count(*) from runs), (select max(as_of) from plannings),"
                " (select count(*) from planned)"
            )
            before = conn.execute(marks).one()
            assert conn.execute(counters).scalar() in (None, 0)
        assert (
            demo.cli("report", "--as-of", AS_OF, "--html", str(tmp_path / "r.html")).exit_code == 0
        )
        with engine.connect() as conn:
            assert conn.execute(marks).one() == before
    finally:
        engine.dispose()
