"""A destination's preparation (``prepare``: its fields, properties, lists) is made while
the run reads its sources, and its failure fails the run where it did when it came after
the pull; a run that fails first waits for those calls before closing the destination."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.files import FilesSource
from connectors.outbox import OutboxDestination, read_outbox
from crmsync.contract import FieldSpec
from crmsync.errors import ConfigError, ConnectorError
from crmsync.records import Stream
from state import schema
from state.store import Store
from tests.e2e import first_read_waits_for, make_site


def test_a_run_prepares_its_destination_while_it_reads_its_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source's first read waits until the destination's prepare was called: in a
    run that prepared only after its pull, it would wait in vain."""
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)
    prepared = threading.Event()
    real_prepare = OutboxDestination.prepare

    def prepare(self: OutboxDestination, fields: Sequence[FieldSpec]) -> None:
        prepared.set()
        real_prepare(self, fields)

    monkeypatch.setattr(OutboxDestination, "prepare", prepare)
    waited = first_read_waits_for(monkeypatch, prepared)
    report = site.run_json()
    assert waited == [True]
    assert report["status"] == "succeeded"
    assert report["destinations"]["out"]["create"] > 0


def test_a_refused_preparation_fails_the_run_after_its_pull_and_nothing_is_pushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)

    def prepare(self: OutboxDestination, fields: Sequence[FieldSpec]) -> None:
        raise ConfigError("the audience refused merge field LTV", key="mapping.LTV")

    monkeypatch.setattr(OutboxDestination, "prepare", prepare)
    result = site.cli("run", "--json")
    assert result.exit_code == 2, result.output  # a setting to fix, as before
    assert "refused merge field LTV" in result.output
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with store.engine.connect() as conn:
            runs = conn.execute(sa.select(schema.runs.c.status, schema.runs.c.error)).all()
            staged = conn.execute(sa.select(sa.func.count()).select_from(schema.customers))
            assert staged.scalar_one() > 0  # the pull ran first, as before
            sent = conn.execute(sa.select(sa.func.count()).select_from(schema.ledger))
            assert sent.scalar_one() == 0  # nothing was pushed
    finally:
        store.close()
    assert [status for status, _ in runs] == ["failed"]
    assert "refused merge field LTV" in (runs[0][1] or "")
    assert not read_outbox(site.outbox)


def test_a_run_whose_pull_fails_closes_its_destination_only_after_the_preparation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)
    order: list[str] = []
    real_close = OutboxDestination.close

    def prepare(self: OutboxDestination, fields: Sequence[FieldSpec]) -> None:
        time.sleep(0.5)  # still calling when the pull has failed
        order.append("prepared")

    def close(self: OutboxDestination) -> None:
        order.append("closed")
        real_close(self)

    def read(self: FilesSource, stream: Stream, since: Any, until: datetime) -> Any:
        raise ConnectorError("the export is unreadable")

    monkeypatch.setattr(OutboxDestination, "prepare", prepare)
    monkeypatch.setattr(OutboxDestination, "close", close)
    monkeypatch.setattr(FilesSource, "read", read)
    result = site.cli("run", "--json")
    assert result.exit_code == 1, result.output
    assert "the export is unreadable" in result.output
    assert order == ["prepared", "closed"]
    assert not [t for t in threading.enumerate() if t.name.startswith("crmsync-prepare-")]
