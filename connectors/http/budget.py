"""Per-account rate budget: a token bucket, a concurrency limit and a vendor-imposed pause.

Budgets are kept per account string in a process-wide registry, so every pipeline and
thread that talks to the same vendor account draws from the same bucket and the vendor
sees one well-behaved client. The bucket is a separate object from the retry policy; it
is fed from responses (``observe``) so a client slows down *before* the vendor says 429:
when a response reports no requests remaining until a reset, the account pauses (for a
rolling window without a reset, HubSpot's, until the next slot is due).

A vendor that counts a rolling window (HubSpot: 100 requests in any 10 seconds) can have
it kept exactly (``keep_window``): a try starts once the one ``size`` tries before it is
``seconds`` old, so a long run goes at the window's full rate, where a token bucket that
never overfills the window gives up its burst for good.

A vendor with a daily allowance (HubSpot) can have it kept (``keep_daily``): the calls
left today, as the vendor's headers last said less the tries started since, never fall
below the reserve; a try that would take them there raises ``QuotaSpent`` before it is
sent, so retries cannot spend the day's calls either. Without ``keep_daily`` nothing
changes for an account.

Clock and sleep are injectable so behaviour is tested without real time passing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from connectors.http.classify import (
    daily_remaining,
    rate_limit_remaining,
    rate_limit_reset,
    rate_limit_spacing,
)
from connectors.http.settings import RateSettings
from crmsync.errors import TransientError

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


class QuotaSpent(TransientError):
    """The account's calls for the day are spent, down to the reserve kept back: no try
    starts before the vendor's day ends (``retry_after`` seconds from now)."""


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
        self._daily_left: int | None = None  # calls left today; None: unknown or not kept
        self._daily_reserve = 0
        self._day_ends: float | None = None  # clock time the vendor's day ends; None: not kept
        self._in_flight = 0
        self._window: deque[float] | None = None  # start times of the latest tries
        self._window_seconds = 0.0

    def keep_window(self, size: int, seconds: float) -> None:
        """From now on at most ``size`` tries start in any ``seconds``."""
        with self._lock:
            if self._window is None or self._window.maxlen != size:
                self._window = deque(self._window or (), maxlen=max(1, size))
            self._window_seconds = max(0.0, seconds)

    def keep_daily(self, reserve: int, day_ends_in: float) -> None:
        """From now on no try starts once the vendor's daily calls left would fall below
        ``reserve``, until its day ends ``day_ends_in`` seconds from now (then the calls
        left are unknown again until a response says)."""
        with self._lock:
            self._daily_reserve = max(0, reserve)
            self._day_ends = self._clock() + max(0.0, day_ends_in)

    def daily_left(self) -> int | None:
        """The calls left today as far as the budget knows (None: unknown)."""
        with self._lock:
            self._new_day()
            return self._daily_left

    def acquire(self) -> float:
        """Waits for a pause to end and for a token; returns the seconds waited. Raises
        ``QuotaSpent`` when a kept daily allowance is spent."""
        waited = 0.0
        with self._lock:
            self._take_daily()
            pause = max(self._paused_until - self._clock(), self._window_wait())
        if pause > 0:
            self._sleep(pause)
            waited += pause
        if self._bucket is not None:
            waited += self._bucket.acquire()
        return waited

    def _window_wait(self) -> float:
        """Books this try's start in a kept rolling window; how long until then (the lock
        is held). Starts are booked in order, so each is the earliest the window allows."""
        window = self._window
        if window is None:
            return 0.0
        now = self._clock()
        start = now
        if len(window) == window.maxlen:
            start = max(now, window[0] + self._window_seconds)
        window.append(start)
        return start - now

    def _take_daily(self) -> None:
        """Counts one try against a kept daily allowance (the lock is held)."""
        self._new_day()
        if self._day_ends is None or self._daily_left is None:
            return
        if self._daily_left <= self._daily_reserve:
            wait = max(0.0, self._day_ends - self._clock())
            raise QuotaSpent(
                f"{self.account}: the day's API calls are spent ({self._daily_left:,} left, "
                f"{self._daily_reserve:,} kept in reserve); the day ends in {wait:,.0f} s",
                retry_after=wait,
            )
        self._daily_left -= 1

    def _new_day(self) -> None:
        """Forgets the calls left once the vendor's day has ended (the lock is held)."""
        if self._day_ends is not None and self._clock() >= self._day_ends:
            self._daily_left, self._day_ends = None, None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one of the account's concurrency slots for the duration of a request."""
        with self._slots:
            with self._lock:
                self._in_flight += 1
            try:
                yield
            finally:
                with self._lock:
                    self._in_flight -= 1

    def pause(self, seconds: float) -> None:
        """No request for this account starts within ``seconds`` from now (capped)."""
        until = self._clock() + min(max(seconds, 0.0), MAX_PAUSE)
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def observe(self, response: httpx.Response) -> None:
        """Pauses the account when the vendor reports an exhausted window with a reset time
        (or, for a rolling window, the spacing of its slots); keeps the calls left today
        when a daily allowance is kept."""
        left = daily_remaining(response)
        if left is not None:
            with self._lock:
                if self._day_ends is not None:
                    # the tries still in flight are not in the vendor's count yet
                    self._daily_left = max(0, left - self._in_flight)
        remaining = rate_limit_remaining(response)
        if remaining is None or remaining > 0:
            return
        reset = rate_limit_reset(response) or rate_limit_spacing(response)
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
