"""The state database opened for reading only, for commands that look and change nothing
(``status``, ``plan --person``).

Such a command must work on a database it may not write (a read-only file, a replica, a
role without write grants) and must never create one where none exists, nor migrate
one: a typo in ``state.url`` would otherwise leave an empty database behind and report
"no runs yet", and an upgrade would be started by someone who only asked how things
stand. So SQLite is opened through a ``file:`` URI with ``mode=ro``, after checking that
the file is there, and every PostgreSQL session is made read-only
(``default_transaction_read_only``), so any write is refused by the server itself.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url

from crmsync.errors import StateError

__all__ = ["readonly_engine"]


def readonly_engine(url: str, engine_for: Callable[[str], Engine]) -> Engine:
    """An engine that reads the state database at ``url`` and cannot write it;
    ``engine_for`` makes the ordinary engine of a server database (the store's own, so
    its driver and session settings stay in one place)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite(parsed)
    engine = engine_for(url)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _read_only_session)
    return engine


def _sqlite(parsed: URL) -> Engine:
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise StateError(
            "state.url names a database in memory, which lives only as long as the run "
            "that holds it: there is nothing to read; give a file (sqlite:///var/crmsync.db)"
        )
    path = Path(database).resolve()
    if not path.is_file():
        raise StateError(
            f"no state database at {path}; run `crmsync run` or `crmsync migrate` first "
            "(or check state.url)"
        )
    uri = f"{path.as_uri()}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
        # a database in WAL mode needs its shared-memory file, which SQLite cannot
        # create in a directory it may not write: and nobody can be writing there
        uri += "&immutable=1"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)

    engine = create_engine(URL.create("sqlite", database=str(path)), creator=connect)
    event.listen(engine, "connect", _query_only)
    return engine


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _read_only_session(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_connection.commit()
