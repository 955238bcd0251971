"""Overlapped bulk writes: in order, on one thread at a time, never after the block ends,
and a failure stops the writes after it and reaches the caller."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Table

from state import schema
from state.bulk import Overlapped, Row


class FakeBulk:
    """Records what it was asked to do, and on which thread; ``fail_on`` raises there."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.delay, self.fail_on = delay, fail_on
        self.busy = threading.Lock()  # held while a call runs: two at once is an error

    def _do(self, what: str) -> None:
        if not self.busy.acquire(blocking=False):
            raise AssertionError("two threads used the connection at once")
        try:
            time.sleep(self.delay)
            if what == self.fail_on:
                raise RuntimeError(f"{what} failed")
            self.calls.append((what, threading.current_thread().name))
        finally:
            self.busy.release()

    def select_in(
        self, table: Table, columns: Sequence[str], source: str, key: str, ids: Sequence[str]
    ) -> Iterator[Row]:
        done = len(self.calls)  # writes finished before this look-up
        self._do("select")
        return iter([("seen", done)])

    def has_rows(self, table: Table, fixed: dict[str, str]) -> bool:
        self._do("has_rows")
        return True

    def values_where(
        self, table: Table, fixed: dict[str, str], column: str, limit: int
    ) -> list[str]:
        self._do("values")
        return ["seen"]

    def upsert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._do(f"upsert {rows[0][0]}")

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
        self._do(f"insert {rows[0][0]}")

    def delete_in(self, table: Table, fixed: dict[str, str], key: str, ids: Sequence[str]) -> None:
        self._do("delete")

    def assign(
        self, table: Table, source: str, key: str, column: str, pairs: Sequence[tuple[str, str]]
    ) -> None:
        self._do("assign")


def run(inner: FakeBulk, body: Any) -> None:
    writer = Overlapped(inner)
    try:
        body(writer)
    finally:
        writer.close()


def test_writes_run_in_order_on_one_worker_and_a_look_up_waits_for_them() -> None:
    inner = FakeBulk(delay=0.01)
    seen: list[Any] = []

    def body(writer: Overlapped) -> None:
        writer.upsert(schema.orders, ["a"], [("1",)])
        writer.insert(schema.order_lines, ["a"], [("2",)])
        seen.extend(writer.select_in(schema.orders, ["a"], "shop", "external_id", ["1"]))
        writer.delete_in(schema.order_lines, {"source": "shop"}, "order_external_id", ["1"])

    run(inner, body)
    assert [what for what, _ in inner.calls] == ["upsert 1", "insert 2", "select", "delete"]
    assert seen == [("seen", 2)]  # both writes were done before the look-up
    workers = {thread for what, thread in inner.calls if what != "select"}
    assert len(workers) == 1 and workers != {threading.current_thread().name}


def test_a_failed_write_stops_the_writes_after_it_and_is_raised() -> None:
    inner = FakeBulk(fail_on="upsert 1")

    def body(writer: Overlapped) -> None:
        writer.upsert(schema.orders, ["a"], [("1",)])
        writer.insert(schema.order_lines, ["a"], [("2",)])

    with pytest.raises(RuntimeError, match="upsert 1 failed"):
        run(inner, body)
    assert inner.calls == []


def test_an_error_in_the_caller_waits_for_the_writes_under_way() -> None:
    """The transaction is rolled back after the block: no write may still be running."""
    inner = FakeBulk(delay=0.05)

    def body(writer: Overlapped) -> None:
        writer.upsert(schema.orders, ["a"], [("1",)])
        raise ValueError("a bad record")

    with pytest.raises(ValueError):
        run(inner, body)
    assert not inner.busy.locked()
    assert [what for what, _ in inner.calls] in ([], ["upsert 1"])
