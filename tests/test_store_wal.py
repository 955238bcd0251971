"""A new SQLite state file is put in WAL mode by whichever connection comes first, however
many connect at once (a run's planning children open a brand-new file together)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from state import store
from state.store import _write_ahead_log


class _Busy:
    """A cursor that answers "database is locked" a few times, as SQLite does to one of
    two connections switching a new file's journal at once, and then reads WAL."""

    def __init__(self, locked: int, error: str = "database is locked") -> None:
        self.locked, self.error = locked, error
        self.statements: list[str] = []

    def execute(self, statement: str) -> Any:
        self.statements.append(statement)
        if self.locked:
            self.locked -= 1
            raise sqlite3.OperationalError(self.error)
        return self

    def fetchone(self) -> tuple[str]:
        return ("wal",)


def test_a_connection_told_the_file_is_locked_looks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    cursor = _Busy(locked=3)
    _write_ahead_log(cursor)  # type: ignore[arg-type]
    assert cursor.statements == ["PRAGMA journal_mode"] * 4


def test_other_errors_and_a_lock_that_never_ends_are_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _write_ahead_log(_Busy(locked=1, error="disk I/O error"))  # type: ignore[arg-type]
    endless = _Busy(locked=10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _write_ahead_log(endless)  # type: ignore[arg-type]
    assert len(endless.statements) == store.WAL_ATTEMPTS


def test_many_connections_to_a_new_file_at_once_all_open_it_in_wal(tmp_path: Path) -> None:
    # without the second look, about one round in seventy failed on a 2-core machine
    failures: list[str] = []
    for round_ in range(300):
        path = tmp_path / f"{round_}.db"
        start = threading.Barrier(4)

        def connect(path: Path = path, start: threading.Barrier = start) -> None:
            connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
            try:
                start.wait()
                _write_ahead_log(connection.cursor())
            except sqlite3.OperationalError as exc:
                failures.append(f"{path.name}: {exc}")
            finally:
                connection.close()

        threads = [threading.Thread(target=connect) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    assert failures == []


def test_a_stores_connections_checkpoint_the_log_only_once_many_pages_have_gathered(
    tmp_path: Path,
) -> None:
    # at SQLite's default of 1,000 pages, every staging commit checkpointed (two fsyncs
    # and a copy of every page it touched): ``store.WAL_CHECKPOINT_PAGES``
    state = store.Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with state.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == store.WAL_CHECKPOINT_PAGES > 1000
    finally:
        state.close()
