"""Per-account rate budget: a token bucket, a concurrency limit and a vendor-imposed pause.

Budgets are kept per account string in a process-wide registry, so every pipeline and
thread that talks to the same vendor account draws from the same bucket and the vendor
sees one well-behaved client. The bucket is a separate object from the retry policy; it
is fed from responses (``observe``) so a client slows down *before* the vendor says 429:
when a response reports no requests remaining until a reset, the account pauses.

Clock and sleep are injectable so behaviour is tested without real time passing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from connectors.http.classify import rate_limit_remaining, rate_limit_reset
from connectors.http.settings import RateSettings

Clock = Callable[[], float]
Sleep = Callable[[float], None]

MAX_PAUSE = 300.0  # never let one header stall an account for longer than this


class TokenBucket:
    """Classic token bucket; thread safe. Callers reserve a token and sleep outside the lock."""

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Takes one token (possibly on credit) and returns how long to wait before using it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        return wait


class AccountBudget:
    """Everything one vendor account allows: tokens, simultaneous requests and pauses."""

    def __init__(
        self,
        account: str,
        rate: RateSettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.account = account
        self.settings = rate
        self._clock = clock
        self._sleep = sleep
        self._bucket = (
            TokenBucket(rate.requests_per_second, rate.burst, clock=clock, sleep=sleep)
            if rate.requests_per_second
            else None
        )
        self._slots = threading.BoundedSemaphore(rate.max_concurrency)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Waits for a pause to end and for a token; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            pause = self._paused_until - self._clock()
        if pause > 0:
            self._sleep(pause)
            waited += pause
        if self._bucket is not None:
            waited += self._bucket.acquire()
        return waited

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one of the account's concurrency slots for the duration of a request."""
        with self._slots:
            yield

    def pause(self, seconds: float) -> None:
        """No request for this account starts within ``seconds`` from now (capped)."""
        until = self._clock() + min(max(seconds, 0.0), MAX_PAUSE)
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def observe(self, response: httpx.Response) -> None:
        """Pauses the account when the vendor reports an exhausted window with a reset time."""
        remaining = rate_limit_remaining(response)
        if remaining is None or remaining > 0:
            return
        reset = rate_limit_reset(response)
        if reset:
            self.pause(reset)


class BudgetRegistry:
    """Account name -> budget. The first settings seen for an account win for the process."""

    def __init__(self, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._budgets: dict[str, AccountBudget] = {}
        self._lock = threading.Lock()

    def get(self, account: str, rate: RateSettings) -> AccountBudget:
        with self._lock:
            budget = self._budgets.get(account)
            if budget is None:
                budget = AccountBudget(account, rate, clock=self._clock, sleep=self._sleep)
                self._budgets[account] = budget
            return budget


BUDGETS = BudgetRegistry()
