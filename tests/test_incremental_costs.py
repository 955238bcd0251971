"""What an incremental run reads follows what changed, and it still ends as a run that
plans everyone does (``tests/test_incremental.py`` compares the two over random changes;
here each skip is shown to be taken, and not to hide a change).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import engine.plan_run
from crmsync.records import Stream
from tests.builders import NOW, customer, order
from tests.test_incremental import Side, side


def both(tmp_path: Path) -> tuple[Side, Side]:
    mine = side(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a")
    full = side(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b")
    return mine, full


def foreign_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "are not in" in w]


def test_orders_in_another_currency_are_counted_from_those_staged_since_when_none_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no order in another currency at the last planning, only the orders staged since
    can be: the count reads those (the staging-time index), not every order; once one is
    counted, the next run counts them all again (an order may have left the currency)."""
    counted: list[int | None] = []
    real = engine.plan_run.foreign_currency_orders

    def spy(*args: Any, staged_since: int | None = None, **kwargs: Any) -> int:
        counted.append(staged_since)
        return real(*args, staged_since=staged_since, **kwargs)

    monkeypatch.setattr(engine.plan_run, "foreign_currency_orders", spy)
    mine, full = both(tmp_path)
    people = [customer(str(i), f"p{i}@example.com") for i in range(6)]
    steps: list[list[Any]] = [
        [order(f"o{i}", str(i), "100", 20) for i in range(6)],  # all in the currency
        [order("o6", "1", "100", 1)],  # another order, in the currency
        [order("x1", "2", "80", 1, currency="EUR")],  # the first in another currency
        [order("x1", "2", "80", 1, updated_at=NOW + timedelta(minutes=5))],  # back in it
    ]
    for number, orders in enumerate(steps):
        for site in (mine, full):
            if number == 0:
                site.stage(Stream.CUSTOMERS, people)
            site.stage(Stream.ORDERS, orders)
        full.forget_marks()
        counted.clear()
        as_of = NOW + timedelta(minutes=10 * (number + 1))
        ours, theirs = mine.run(as_of), full.run(as_of)
        if number:
            assert ours.planning == "incremental"
        assert foreign_warnings(ours.warnings) == foreign_warnings(theirs.warnings), number
        assert ours.segments == theirs.segments
        if number in (1, 2):  # none counted before: only what was staged since is read
            assert counted and all(since is not None for since in counted), counted
        if number == 3:  # one counted last time: every order is counted
            assert counted == [None], counted
    assert foreign_warnings(mine.run(NOW + timedelta(hours=1)).warnings) == []
    for site in (mine, full):
        site.store.close()


def test_an_order_staged_in_another_currency_is_warned_of(tmp_path: Path) -> None:
    mine, _ = both(tmp_path)
    mine.stage(Stream.CUSTOMERS, [customer("1", "p1@example.com")])
    mine.stage(Stream.ORDERS, [order("o1", "1", "100", 10)])
    assert foreign_warnings(mine.run(NOW).warnings) == []
    mine.stage(Stream.ORDERS, [order("x1", "1", "50", 1, currency="USD")])
    report = mine.run(NOW + timedelta(minutes=1))
    assert report.planning == "incremental"
    assert len(foreign_warnings(report.warnings)) == 1
    assert foreign_warnings(report.warnings)[0].startswith("1 orders")
    mine.store.close()
