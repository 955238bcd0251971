"""A vendor account's budget kept in Redis, for every process on every machine.

``AccountBudget`` keeps an account's limits for one process; N worker processes would each
keep their own and together send N times what the vendor allows. A ``SharedBudget`` has
the same interface (``budget.Budget``) and keeps everything in Redis, through the atomic
scripts of ``shared_store``: the token bucket, the concurrency slots, the pause a 429 or
an exhausted window asks for, the rolling windows, the fixed windows learned from the
vendor's answers (``fixed_window``) and the daily allowance. The registry
hands one out for every account whose ``rate.shared`` names a Redis server (see
``docs/scale.md``, "Shared rate budgets").

Concurrency slots are leases: a slot taken is held until given back, and a thread of
this module renews every lease the process holds every third of ``rate.shared_lease``,
so a request may last as long as it needs; a process that dies without giving its slots
back (SIGKILL, a lost machine) stops renewing them and they come back to the account
once the lease runs out. A thread waiting for a slot blocks on the account's bell, rung
when a slot is given back, and looks again at least every ``POLL`` seconds (a lease that
runs out rings nothing).

Redis out of reach is a ``ConfigError`` naming the setting, never a quiet fall back to a
budget of the process's own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from connectors.http import redact
from connectors.http.budget import MAX_PAUSE, REFUSED, Booking, QuotaSpent, Sleep
from connectors.http.classify import (
    daily_remaining,
    rate_limit_remaining,
    rate_limit_reset,
    rate_limit_spacing,
)
from connectors.http.fixed_window import stated
from connectors.http.settings import RateSettings
from connectors.http.shared_store import AccountKeys, SharedStore, Spent, Window
from crmsync.errors import CrmsyncError

log = logging.getLogger("crmsync.http")

POLL = 0.25  # seconds a thread waiting for a slot blocks before it looks again

Clock = Callable[[], float]
Now = Callable[[], str]


class Leases:
    """The slots this process holds at one Redis server, renewed by one daemon thread."""

    def __init__(self, store: SharedStore) -> None:
        self._store = store
        self._held: dict[str, dict[str, tuple[float, Now]]] = {}  # slots key -> member -> lease
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def take(self, keys: AccountKeys, size: int, lease: float, now: Now) -> str:
        """Waits for one of the account's ``size`` slots; the lease's name."""
        member = f"{os.getpid()}:{uuid.uuid4().hex}"
        while not self._store.take_slot(keys.slots, now(), size, lease, member):
            self._store.wait_bell(keys.bell, POLL)
        with self._lock:
            self._held.setdefault(keys.slots, {})[member] = (lease, now)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew, name="crmsync-budget-leases", daemon=True
                )
                self._thread.start()
        return member

    def give(self, keys: AccountKeys, size: int, member: str) -> None:
        with self._lock:
            self._held.get(keys.slots, {}).pop(member, None)
        try:
            self._store.give_slot(keys, size, member)
        except CrmsyncError as exc:  # the lease runs out by itself; the next try reports it
            log.warning("a shared rate budget slot could not be given back: %s", exc)

    def forget(self) -> None:
        """In a forked child: the parent's leases are not its own, nor is the parent's
        thread, and a lock another thread held at the fork would never be released."""
        self._held, self._thread, self._lock = {}, None, threading.Lock()

    def _renew(self) -> None:
        while True:
            with self._lock:
                held = {key: dict(members) for key, members in self._held.items() if members}
            leases = [lease for members in held.values() for lease, _ in members.values()]
            time.sleep(min(leases, default=3.0) / 3)
            for key, members in held.items():
                self._renew_key(key, members)

    def _renew_key(self, key: str, members: dict[str, tuple[float, Now]]) -> None:
        lease, now = next(iter(members.values()))
        with self._lock:  # only those still held: a slot given back meanwhile stays so
            names = [name for name in members if name in self._held.get(key, {})]
        if not names:
            return
        try:
            kept = self._store.renew_slots(key, now(), lease, names)
        except CrmsyncError as exc:
            log.warning("shared rate budget leases could not be renewed: %s", exc)
            return
        if kept < len(names):
            log.warning(
                "%d shared rate budget slot(s) ran out before they were renewed (a process "
                "paused for longer than rate.shared_lease): the account may briefly have more "
                "requests in flight than it allows",
                len(names) - kept,
            )


class SharedBudget:
    """``AccountBudget``'s interface, kept in Redis for every process of the account."""

    def __init__(
        self,
        account: str,
        rate: RateSettings,
        store: SharedStore,
        *,
        clock: Clock | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.account = account
        self.settings = rate
        self._store = store
        self._leases = _leases(store)
        self._keys = AccountKeys.of(account)
        self._clock = clock
        self._sleep = sleep
        self._windows: dict[float, int] = {}  # kept rolling windows: seconds -> size
        # kept fixed windows, by the rolling window that stands in for each until learned
        self._fixed: dict[float, Window] = {}
        self._daily_kept = False
        self._tries = threading.local()  # ``booking``: the try this thread has under way

    def _now(self) -> str:
        """The caller's clock for the scripts, or "" for the Redis server's."""
        return "" if self._clock is None else repr(float(self._clock()))

    def keep_window(self, size: int, seconds: float) -> None:
        self._windows[max(0.0, seconds)] = max(1, size)

    def keep_fixed_window(self, size: int, seconds: float, margin: float) -> None:
        """As ``AccountBudget.keep_fixed_window``, for every process of the account: a
        rolling window of ``seconds + margin`` until an answer any of them reads tells
        where the vendor's window resets, then fixed windows, counted in Redis."""
        rolling = max(0.0, seconds) + max(0.0, margin)
        self.keep_window(size, rolling)
        self._fixed[rolling] = Window(max(1, size), rolling, max(0.0, seconds), max(0.0, margin))

    def keep_daily(self, reserve: int, day_ends_in: float) -> None:
        self._store.daily_keep(
            self._keys.daily, self._now(), max(0, reserve), max(0.0, day_ends_in)
        )
        self._daily_kept = True

    def daily_left(self) -> int | None:
        if not self._daily_kept:
            return None
        return self._store.daily_left(self._keys.daily, self._now())

    def acquire(self) -> float:
        """As ``AccountBudget.acquire``: books the try against a kept daily allowance
        (``QuotaSpent`` when it is spent), then waits for the account's pause, its rolling
        window and a token of its bucket; returns the seconds waited."""
        self._settle(refused=False)
        if self._daily_kept:
            booked = self._store.daily_book(self._keys.daily, self._now())
            if isinstance(booked, Spent):
                raise QuotaSpent(
                    f"{self.account}: the day's API calls are spent ({booked.left:,} left, "
                    f"{booked.reserve:,} kept in reserve); the day ends in {booked.wait:,.0f} s",
                    retry_after=booked.wait,
                )
            self._tries.booking = booked
        windows = [
            self._fixed.get(seconds) or Window(size, seconds)
            for seconds, size in self._windows.items()
        ]
        waited = self._store.gate(self._keys, self._now(), windows, uuid.uuid4().hex)
        if waited > 0:
            self._sleep(waited)
        rate = self.settings.requests_per_second
        if rate:
            wait = self._store.bucket(self._keys.bucket, self._now(), rate, self.settings.burst)
            if wait > 0:
                self._sleep(wait)
                waited += wait
        return waited

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one of the account's slots (a renewed lease) for the request's duration; a
        request that fails in it settles this thread's try, as ``AccountBudget.slot``."""
        size = self.settings.max_concurrency
        member = self._leases.take(self._keys, size, self.settings.shared_lease, self._now)
        try:
            yield
        except BaseException:
            self._settle(refused=False)
            raise
        finally:
            self._leases.give(self._keys, size, member)

    def pause(self, seconds: float) -> None:
        """No request of the account, in any process, starts within ``seconds`` (capped)."""
        self._store.pause(self._keys.pause, self._now(), min(max(seconds, 0.0), MAX_PAUSE))

    def observe(self, response: httpx.Response) -> None:
        """As ``AccountBudget.observe``: settles this thread's try, takes in the calls left
        today, and pauses the account when the vendor reports an exhausted window."""
        left = daily_remaining(response)
        booking = self._take_booking()
        if booking is not None or (self._daily_kept and left is not None):
            refused = response.status_code == REFUSED
            self._store.daily_answer(
                self._keys.daily, self._now(), booking, refused=refused, left=left
            )
        remaining = rate_limit_remaining(response)
        if self._fixed and response.status_code != REFUSED:
            self._learn_windows(response, remaining)
        if remaining is None or remaining > 0:
            return
        reset = rate_limit_reset(response) or rate_limit_spacing(response)
        if reset:
            self.pause(reset)

    def _learn_windows(self, response: httpx.Response, remaining: float | None) -> None:
        """An answer that states a kept fixed window's size tells when it resets."""
        for window, reset in stated(response, self._fixed.values()):
            self._store.fixed_learn(self._keys, self._now(), window, reset, remaining)

    def _take_booking(self) -> Booking | None:
        booking: Booking | None = getattr(self._tries, "booking", None)
        self._tries.booking = None
        return booking

    def _settle(self, *, refused: bool) -> None:
        booking = self._take_booking()
        if booking is not None:
            self._store.daily_answer(
                self._keys.daily, self._now(), booking, refused=refused, left=None
            )


class _Process:
    """What this process keeps per Redis server: one store, and the leases it holds."""

    lock = threading.Lock()
    stores: dict[tuple[str, str], SharedStore] = {}
    leases: weakref.WeakKeyDictionary[SharedStore, Leases] = weakref.WeakKeyDictionary()

    @classmethod
    def after_fork_in_child(cls) -> None:
        cls.lock = threading.Lock()  # another thread may have held it at the fork
        for leases in list(cls.leases.values()):
            leases.forget()


os.register_at_fork(after_in_child=_Process.after_fork_in_child)


def store_at(url: str, *, key: str) -> SharedStore:
    """The process's one store for ``url`` (its password registered as a secret, so no
    log line shows it), reached once when it is first asked for; ``key`` names the
    setting in its errors."""
    with _Process.lock:
        store = _Process.stores.get((url, key))
        if store is None:
            password = urlsplit(url).password
            if password:
                redact.register([password])
            store = SharedStore(url, key=key)
            store.ping()  # a client is built at start: a server out of reach stops it there
            _Process.stores[(url, key)] = store
        return store


def _leases(store: SharedStore) -> Leases:
    with _Process.lock:
        found = _Process.leases.get(store)
        if found is None:
            found = _Process.leases[store] = Leases(store)
        return found
