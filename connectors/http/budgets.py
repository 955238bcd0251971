"""Which budget an account gets: the registry every HTTP client draws its budget from.

An account keeps one budget per process (``AccountBudget``), or, where its
``rate.shared`` (or the process's ``share``) names a Redis server, one budget that every
process and machine on that account draws from (``SharedBudget``). The registry is apart
from both kinds so that neither imports the other.
"""

from __future__ import annotations

import threading
import time

from connectors.http.budget import AccountBudget, Budget, Clock, Sleep
from connectors.http.settings import RateSettings


class BudgetRegistry:
    """Account name -> budget. The first settings seen for an account win for the process.

    An account whose ``rate.shared`` names a Redis server (or any account, once ``share``
    named one for the process) gets a ``SharedBudget`` kept there; the others get an
    ``AccountBudget`` of their own. ``clock`` left unset: local budgets read
    ``time.monotonic`` and shared ones the Redis server's clock, the one clock every
    machine sees; a test injects one for both."""

    def __init__(self, *, clock: Clock | None = None, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[tuple[str, str], Budget] = {}
        self._shared: tuple[str, str] | None = None  # (url, config key) from ``share``
        self._lock = threading.Lock()

    def share(self, url: str | None, *, key: str) -> None:
        """Keeps every account's budget at the Redis ``url`` (None: each process's own
        again) unless its own ``rate.shared`` says otherwise; ``key`` names the setting
        in errors. Budgets already handed out keep their place."""
        with self._lock:
            self._shared = (url, key) if url else None

    def get(self, account: str, rate: RateSettings) -> Budget:
        with self._lock:
            url, key = self._shared or ("", "")
            if rate.shared is not None:
                url, key = rate.shared.get_secret_value(), SHARED_KEY
            budget = self._budgets.get((account, url))
            if budget is None:
                budget = self._new(account, rate, url, key)
                self._budgets[(account, url)] = budget
            return budget

    def _new(self, account: str, rate: RateSettings, url: str, key: str) -> Budget:
        if not url:
            return AccountBudget(
                account, rate, clock=self._clock or time.monotonic, sleep=self._sleep
            )
        from connectors.http.shared_budget import SharedBudget, store_at  # imports redis

        store = store_at(url, key=key)
        return SharedBudget(account, rate, store, clock=self._clock, sleep=self._sleep)


SHARED_KEY = "http.rate.shared"  # the setting that names a shared budget, for its errors
BUDGETS = BudgetRegistry()
