"""The state databases benchmarks run on: a temporary SQLite file, or a private schema in
the tests' PostgreSQL database (``CRMSYNC_TEST_POSTGRES_URL``)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "CRMSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def state_url(engine: str, prefix: str) -> Iterator[str]:
    """A fresh state database for one measurement, dropped afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}_") as directory:
            yield f"sqlite:///{Path(directory) / 'state.db'}"
        return
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'create schema "{name}"'))
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop schema "{name}" cascade'))
        admin.dispose()
