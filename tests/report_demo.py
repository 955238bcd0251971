"""The bundled sample store run through the demo configuration into a state database of
a test's own, for the segment report's tests, and what the report's figures must be,
computed straight from that database in SQL (none of the report's code)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from click.testing import CliRunner, Result

from cli import main

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-01T09:00:00+00:00"  # the sample store's "now"
AS_OF_MS = 1_793_523_600_000
CENT = Decimal("0.01")


@dataclass
class Demo:
    config: Path
    db: Path
    url: str

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--config", str(self.config)])

    def report_json(self, *extra: str) -> dict[str, Any]:
        result = self.cli("report", "--json", *extra)
        assert result.exit_code == 0, result.output
        [report] = json.loads(result.stdout)
        return dict(report)


def demo_state(root: Path, command: str = "run", url: str | None = None) -> Demo:
    """config.example.toml with its state (``url``, else SQLite under ``root``), outbox and
    sample paths moved under ``root``, run once as of the sample store's now (``plan``: a
    dry run, which keeps no planning)."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    db = root / "state.db"
    url = url or f"sqlite:///{db}"
    text = text.replace('"sqlite:///var/crmsync.db"', f'"{url}"')
    text = text.replace('"var/outbox"', f'"{root / "outbox"}"')
    text = text.replace('"sample_data/', f'"{ROOT / "sample_data"}/')
    config = root / "config.toml"
    config.write_text(text, encoding="utf-8")
    demo = Demo(config, db, url)
    extra = ["--no-progress"] if command == "run" else []
    result = demo.cli(command, "--as-of", AS_OF, *extra)
    assert result.exit_code == 0, result.output
    return demo


@dataclass
class Expected:
    people: int = 0
    orders: int = 0
    revenue_minor: int = 0

    @property
    def revenue(self) -> Decimal:
        return (Decimal(self.revenue_minor) / 100).quantize(CENT)

    @property
    def aov(self) -> Decimal | None:
        if not self.orders:
            return None
        return (Decimal(self.revenue_minor) / 100 / self.orders).quantize(
            CENT, rounding=ROUND_HALF_EVEN
        )


def expected_figures(url: str, as_of_ms: int) -> tuple[Expected, dict[str, Expected]]:
    """Everyone's and each segment's people, orders and revenue, from the segments the
    run kept per person (``planned``) and the counted orders of each person, in SQL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            linked = conn.execute(
                sa.text(
                    "select count(*) from customers l join customers k on k.phone = l.phone"
                    " and k.email is not null where l.email is null"
                )
            ).scalar()
            assert linked == 0, "the SQL below does not join phone-linked customers"
            rows = conn.execute(
                sa.text(
                    """
                    with spend as (
                        select person_key, count(*) as n, sum(net_minor) as total
                        from orders
                        where counted and currency = 'TRY' and source = 'demo_store'
                          and placed_at <= :as_of
                        group by person_key
                    )
                    select p.segments, coalesce(s.n, 0), coalesce(s.total, 0)
                    from planned p left join spend s on s.person_key = p.person_key
                    where p.pipeline = 'demo' and p.segments is not null
                    """
                ),
                {"as_of": as_of_ms},
            ).all()
    finally:
        engine.dispose()
    everyone = Expected()
    segments: dict[str, Expected] = defaultdict(Expected)
    for names, orders, total in rows:
        for figures in [everyone, *(segments[n] for n in names.split("\n") if n)]:
            figures.people += 1
            figures.orders += orders
            figures.revenue_minor += total
    return everyone, dict(segments)


def segment_sizes(url: str) -> dict[str, int]:
    """Each segment's size at the last planning, from ``planned``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select segments from planned where pipeline = 'demo'")
            ).scalars()
            sizes: dict[str, int] = defaultdict(int)
            for names in rows:
                for name in (names or "").split("\n"):
                    if name:
                        sizes[name] += 1
    finally:
        engine.dispose()
    return dict(sizes)
