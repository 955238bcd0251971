"""Per-account rate budget: a token bucket, a concurrency limit and a vendor-imposed pause.

Budgets are kept per account string in a process-wide registry, so every pipeline and
thread that talks to the same vendor account draws from the same bucket and the vendor
sees one well-behaved client. The bucket is a separate object from the retry policy; it
is fed from responses (``observe``) so a client slows down *before* the vendor says 429:
when a response reports no requests remaining until a reset, the account pauses (for a
rolling window without a reset, HubSpot's, until the next slot is due).

A vendor that counts rolling windows (HubSpot: 100 requests in any 10 seconds; Klaviyo:
a burst per second and a steady rate per minute) can have each kept exactly
(``keep_window``): a try starts once the one ``size`` tries before it is ``seconds`` old in
every window kept, so a long run goes at the windows' full rate, where a token bucket that
never overfills a window gives up its burst for good.

A vendor with a daily allowance (HubSpot) can have it kept (``keep_daily``): the calls
left today never fall below the reserve; a try that would take them there raises
``QuotaSpent`` before it is sent, so retries cannot spend the day's calls either. How the
calls left are counted under concurrency is ``DailyAllowance``'s: every try counts from
the moment it is booked until its answer is read. Without ``keep_daily`` nothing changes
for an account.

Every process keeps its own budgets unless an account's ``rate.shared`` names a Redis
server: then the registry (``connectors.http.budgets``) hands out a ``SharedBudget``
(``connectors.http.shared_budget``) with the same interface, ``Budget``, kept there for
every process on every machine that talks to the account.

Clock and sleep are injectable so behaviour is tested without real time passing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import httpx

from connectors.http.classify import (
    daily_remaining,
    rate_limit_remaining,
    rate_limit_reset,
    rate_limit_spacing,
)
from connectors.http.fixed_window import FixedWindow, stated
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


REFUSED = 429  # an answer the vendor gives a try it refused before counting it


@dataclass(slots=True)
class Booking:
    """One try's claim on a kept daily allowance, from its booking (before it waits for
    the window, a concurrency slot or the wire) until its answer is read or it fails."""

    number: int  # the order in which tries were booked
    answered_before: int  # charged tries whose answers were read before this was booked
    charged: bool  # counted against the allowance (False: none was kept when booked)
    open: bool = True  # not answered yet


class DailyAllowance:
    """The calls a vendor's day has left, counted so that concurrent tries never spend
    the reserve. Bookkeeping only: the budget holds its lock around every call.

    An answer's ``left`` counts every call the vendor received before answering, but
    not those it received after, so the calls left *now* are at least ``left`` less
    every try that may have reached it later: those booked before that answer's try and
    not answered when it was booked, and every try booked since. Hence each try counts
    from its booking (it may be waiting for the window or a slot, then on the wire)
    until its answer is read. Answers are read in any order, so only the answer of the
    latest-booked try read so far sets the count: an older answer read late would give
    back calls its younger siblings already spent. A try refused with 429 was never
    counted by the vendor (its retry is booked afresh), so it gives its call back.

    Two counters keep this without a list of tries: ``charged`` (tries booked and not
    refused) and ``answered`` (charged tries whose answers were read or that failed). The
    calls left are then ``base - charged``, where the freshest answer set ``base = left +
    answered_before + 1`` (``+ 1``: that answer's own try, which ``left`` counts).
    """

    def __init__(self) -> None:
        self.reserve = 0
        self.ends: float | None = None  # clock time the vendor's day ends; None: not kept
        self._booked = 0
        self._charged = 0
        self._answered = 0
        self._base: int | None = None  # calls left = base - charged; None: unknown
        self._base_from = 0  # the booking number of the answer that set ``base``

    def keep(self, reserve: int, ends: float) -> None:
        self.reserve, self.ends = max(0, reserve), ends

    def new_day(self, now: float) -> None:
        """Once the vendor's day has ended the calls left are unknown (and no longer
        kept) until ``keep`` is called again; answers to tries of the old day are ignored."""
        if self.ends is not None and now >= self.ends:
            self.ends, self._base, self._base_from = None, None, self._booked + 1

    def left(self) -> int | None:
        """The calls left today as far as is known (None: unknown, or not kept)."""
        return None if self._base is None else max(0, self._base - self._charged)

    def book(self, account: str, now: float) -> Booking:
        """Books one try; ``QuotaSpent`` when it would take the calls left to the reserve."""
        self.new_day(now)
        kept = self.ends is not None
        left = self.left()
        if kept and left is not None and left <= self.reserve:
            wait = max(0.0, (self.ends or now) - now)
            raise QuotaSpent(
                f"{account}: the day's API calls are spent ({left:,} left, "
                f"{self.reserve:,} kept in reserve); the day ends in {wait:,.0f} s",
                retry_after=wait,
            )
        self._booked += 1
        booking = Booking(self._booked, self._answered, charged=kept)
        self._charged += kept
        return booking

    def settle(self, booking: Booking, *, refused: bool = False) -> None:
        """The try's answer was read (or it failed without one); ``refused``: the vendor
        refused it before counting it (429), so its call is given back."""
        if not booking.open:
            return
        booking.open = False
        if not booking.charged:
            return
        if refused:
            self._charged -= 1
        else:
            self._answered += 1

    def observe(self, left: int, booking: Booking | None, *, refused: bool = False) -> None:
        """An answer said ``left`` calls are left today (its try settled already).
        ``booking`` None: an answer to a try not booked here, as fresh as the latest."""
        if self.ends is None:
            return
        if booking is None:
            number, before, counted = max(self._booked, self._base_from), self._answered, 0
        else:
            number, before = booking.number, booking.answered_before
            counted = 1 if booking.charged and not refused else 0
        if number >= self._base_from:
            self._base, self._base_from = left + before + counted, number


class Budget(Protocol):
    """What a client asks of an account's budget, wherever the budget is kept."""

    account: str
    settings: RateSettings

    def acquire(self) -> float: ...
    def slot(self) -> AbstractContextManager[None]: ...
    def pause(self, seconds: float) -> None: ...
    def observe(self, response: httpx.Response) -> None: ...
    def keep_window(self, size: int, seconds: float) -> None: ...
    def keep_fixed_window(self, size: int, seconds: float, margin: float) -> None: ...
    def keep_daily(self, reserve: int, day_ends_in: float) -> None: ...
    def daily_left(self) -> int | None: ...


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
        self._daily = DailyAllowance()
        self._tries = threading.local()  # ``booking``: the try this thread has under way
        self._windows: dict[float, int] = {}  # kept rolling windows: seconds -> size
        # kept fixed windows, by the rolling window that stands in for each until learned
        self._fixed: dict[float, FixedWindow] = {}
        self._starts: deque[float] = deque(maxlen=1)  # the latest tries' start times

    def keep_window(self, size: int, seconds: float) -> None:
        """From now on at most ``size`` tries start in any ``seconds``; windows of other
        lengths kept before are kept too (one of the same length takes the new size)."""
        with self._lock:
            self._windows[max(0.0, seconds)] = max(1, size)
            most = max(self._windows.values())
            if self._starts.maxlen != most:
                self._starts = deque(self._starts, maxlen=most)

    def keep_fixed_window(self, size: int, seconds: float, margin: float) -> None:
        """From now on at most ``size`` tries start between two of the vendor's resets,
        ``seconds`` apart (``connectors.http.fixed_window``): a rolling window of ``seconds
        + margin`` until an answer whose ``RateLimit-Limit`` is ``size`` tells when the
        window resets, then fixed windows with ``margin`` seconds kept clear of each reset."""
        rolling = max(0.0, seconds) + max(0.0, margin)
        self.keep_window(size, rolling)
        with self._lock:
            self._fixed[rolling] = FixedWindow(size, seconds, margin)

    def keep_daily(self, reserve: int, day_ends_in: float) -> None:
        """From now on no try starts once the vendor's daily calls left would fall below
        ``reserve``, until its day ends ``day_ends_in`` seconds from now (then the calls
        left are unknown again until a response says)."""
        with self._lock:
            now = self._clock()
            self._daily.new_day(now)  # yesterday's count must not outlive its day
            self._daily.keep(reserve, now + max(0.0, day_ends_in))

    def daily_left(self) -> int | None:
        """The calls left today as far as the budget knows (None: unknown)."""
        with self._lock:
            self._daily.new_day(self._clock())
            return self._daily.left()

    def acquire(self) -> float:
        """Books a try, then waits for a pause to end and for a token; returns the seconds
        waited. Raises ``QuotaSpent`` when a kept daily allowance is spent.

        The try stays booked on this thread until ``observe`` reads its answer or it
        fails in ``slot``; a thread that books again has finished its last try (answered
        or not), which then counts as one the vendor may have received."""
        waited = 0.0
        with self._lock:
            self._settle(refused=False)
            self._tries.booking = self._daily.book(self.account, self._clock())
            pause = max(self._paused_until - self._clock(), self._window_wait())
        if pause > 0:
            self._sleep(pause)
            waited += pause
        if self._bucket is not None:
            waited += self._bucket.acquire()
        return waited

    def _window_wait(self) -> float:
        """Books this try's start in the kept rolling windows; how long until then (the
        lock is held). Starts are booked in order, so each is the earliest every window
        allows, and no later than the next one's."""
        if not self._windows:
            return 0.0
        now = self._clock()
        start, starts = now, self._starts
        for seconds, size in self._windows.items():
            fixed = self._fixed.get(seconds)
            if fixed is not None and fixed.end is not None:
                continue  # kept as the vendor's fixed window, below
            if len(starts) >= size:
                start = max(start, starts[-size] + seconds)
        for fixed in self._fixed.values():
            if fixed.end is not None:
                start = fixed.place(start)
        starts.append(start)
        return start - now

    def _learn_windows(self, response: httpx.Response, now: float, remaining: float | None) -> None:
        """An answer that states a kept fixed window's size tells when it resets (the lock
        is held)."""
        for fixed, reset in stated(response, self._fixed.values()):
            fixed.learn(now, reset, remaining, self._starts)

    def _settle(self, *, refused: bool) -> Booking | None:
        """Settles this thread's open try, if it has one (the lock is held)."""
        booking: Booking | None = getattr(self._tries, "booking", None)
        if booking is not None:
            self._daily.settle(booking, refused=refused)
            self._tries.booking = None
        return booking

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one of the account's concurrency slots for the duration of a request. A
        request that fails in it (no answer to observe) settles this thread's try: the
        vendor may have counted it."""
        with self._slots:
            try:
                yield
            except BaseException:
                with self._lock:
                    self._settle(refused=False)
                raise

    def pause(self, seconds: float) -> None:
        """No request for this account starts within ``seconds`` from now (capped)."""
        until = self._clock() + min(max(seconds, 0.0), MAX_PAUSE)
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    def observe(self, response: httpx.Response) -> None:
        """Reads the answer to this thread's try: settles it (a 429 gives its daily call
        back), keeps the calls left today when a daily allowance is kept, and pauses the
        account when the vendor reports an exhausted window with a reset time (or, for a
        rolling window, the spacing of its slots)."""
        left = daily_remaining(response)
        refused = response.status_code == REFUSED
        remaining = rate_limit_remaining(response)
        with self._lock:
            now = self._clock()
            self._daily.new_day(now)
            booking = self._settle(refused=refused)
            if left is not None:
                self._daily.observe(left, booking, refused=refused)
            if self._fixed and not refused:
                self._learn_windows(response, now, remaining)
        if remaining is None or remaining > 0:
            return
        reset = rate_limit_reset(response) or rate_limit_spacing(response)
        if reset:
            self.pause(reset)
