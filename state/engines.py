"""The state databases a long-lived process keeps open: one engine per state URL.

A command that runs once opens its store, runs, and closes it, and the process ends.
``crmsync serve`` runs every store's pipelines again and again, and a store opened anew
for each run paid every time for what does not change from one run to the next: a new
pool of connections (on PostgreSQL a server process per connection, with its
authentication and session settings) and the SQL of every statement the run executes,
which SQLAlchemy compiles once per engine and caches there: a fresh engine compiles
them all again. A small store's run with nothing to do spent a third of its time on
these.

``KeptEngines`` opens each state database once, on its first run, and hands the same
engine to every later run of the process (each run still checks the schema: a query).
Its pool keeps a few connections between runs and opens more when runs at once need
them, without the cap per engine that would make one run wait for another's
connections (``state.store.KEPT_POOL``). A database in memory is never kept: it lives
in its connections, which a shared pool would hand from one run's thread to another's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine


class KeptEngines:
    """The engines of one process, by state URL, until ``close``."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def engine(self, url: str, open_engine: Callable[[str], Engine]) -> Engine:
        """The engine of ``url``, opened by ``open_engine`` the first time it is asked for
        (under the lock: two runs that start at once open it once). What ``open_engine``
        raises is raised and nothing is kept, so the next run tries again."""
        with self._lock:
            found = self._engines.get(url)
            if found is None:
                found = self._engines[url] = open_engine(url)
            return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._engines)

    def close(self) -> None:
        """Closes every kept engine's pooled connections; a connection a run still holds is
        closed when that run gives it back."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()
