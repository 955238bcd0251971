"""The few figures metrics, alerts and readiness read from a store's state database.

Read only, small aggregate queries, one engine per database URL (many stores usually
share one database). A run that went through counts as a success whether or not some of
its records failed (``succeeded`` or ``partial``): records are the failed-share alert's
business, a run that never completes is the staleness alert's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from state import schema
from state.store import Store
from state.timeutil import from_ms

SUCCESS = ("succeeded", "partial")

__all__ = ["SUCCESS", "StateReads"]


class StateReads:
    """Opens each database once (without migrating it: the runs do that) and answers."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def engine(self, url: str) -> Engine:
        with self._lock:
            store = self._stores.get(url)
            if store is None:
                store = self._stores[url] = Store(url, migrate=False)
            return store.engine

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()

    def reachable(self, url: str) -> tuple[bool, str]:
        """Whether a connection to ``url`` answers ``SELECT 1``, and if not, why (the
        reason names no password: SQLAlchemy's messages render URLs masked)."""
        try:
            with self.engine(url).connect() as conn:
                conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        except Exception as exc:  # a StateError opening it, a driver missing
            return False, f"{type(exc).__name__}: {exc}"
        return True, "ok"

    def last_successes(self, url: str, pipelines: Sequence[str]) -> dict[str, datetime]:
        """Per pipeline, when its last run that went through finished (absent: never)."""
        runs = schema.runs
        query = (
            select(runs.c.pipeline, func.max(runs.c.finished_at))
            .where(runs.c.pipeline.in_(list(pipelines)), runs.c.status.in_(SUCCESS))
            .group_by(runs.c.pipeline)
        )
        with self.engine(url).connect() as conn:
            rows = conn.execute(query).all()
        found = {name: from_ms(at) for name, at in rows}
        return {name: at for name, at in found.items() if at is not None}

    def pending_jobs(self, url: str, destinations: Sequence[str]) -> dict[str, int]:
        """Per destination, the asynchronous jobs sent and not yet collected."""
        flight = schema.in_flight
        query = (
            select(flight.c.destination, func.count(func.distinct(flight.c.job)))
            .where(flight.c.destination.in_(list(destinations)), flight.c.job.is_not(None))
            .group_by(flight.c.destination)
        )
        with self.engine(url).connect() as conn:
            return {name: int(n) for name, n in conn.execute(query)}

    def failure_backlog(self, url: str, destinations: Sequence[str]) -> dict[tuple[str, str], int]:
        """Per (destination, reason class), the people a destination refused that are
        still on file (failed ones wait for a retry; rejected and compliance do not)."""
        failures = schema.failures
        query = (
            select(failures.c.destination, failures.c.reason_class, func.count())
            .where(failures.c.destination.in_(list(destinations)))
            .group_by(failures.c.destination, failures.c.reason_class)
        )
        with self.engine(url).connect() as conn:
            return {(d, r): int(n) for d, r, n in conn.execute(query)}
