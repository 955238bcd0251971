"""Segments as Klaviyo lists: found or created by name, members moved in bulk.

Klaviyo's segments are computed by Klaviyo and cannot be written through the API, so each
of crmsync's memberships is a static list named with the owned prefix. The name -> id
index is the kit's ``GroupIndex`` (listed once, lazily; missing lists created). Creating a
list is not idempotent and Klaviyo allows 150 a day per account, so a create is tried
again only after checking that the list still does not exist, and a create refused for
the daily cap fails the people who needed that list (with the reason) instead of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor

from connectors.http.retry import Sleep
from connectors.kit.groups import GroupIndex
from connectors.kit.memberships import MembershipCall, plan_membership_calls
from connectors.klaviyo.client import KlaviyoApi, KlaviyoApiError
from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.payloads import quoted
from crmsync.errors import CrmsyncError, TransientError

Clock = Callable[[], float]


class ListCapReached(CrmsyncError):
    """Klaviyo refuses to create more lists for now (its daily cap). Not a ConnectorError:
    the kit's index would list every list again to look for one that cannot exist."""


class KlaviyoLists:
    """The owned lists of one account: the index and the member moves."""

    def __init__(
        self,
        api: KlaviyoApi,
        config: KlaviyoConfig,
        *,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._api = api
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._refused_until = 0.0  # no list create is tried before this (clock) time
        self._lock = threading.Lock()
        self.index = GroupIndex(self._owned, self._create)

    def _owned(self) -> Iterator[tuple[str, str]]:
        prefix = self._config.list_prefix
        return ((name, ident) for name, ident in self._api.lists() if name.startswith(prefix))

    def _find(self, name: str) -> str | None:
        for found, ident in self._api.lists(f"equals(name,{quoted(name)})"):
            if found == name:
                return ident
        return None

    def _create(self, name: str, first_members: Sequence[str] = ()) -> str:
        with self._lock:
            if self._clock() < self._refused_until:
                raise ListCapReached(self._refused(name))
        retry = self._config.http.retry
        for attempt in range(1, retry.attempts + 1):
            try:
                ident, exhausted = self._api.create_list(name)
            except TransientError as exc:
                wait = exc.retry_after
                if wait is not None and wait > retry.max_retry_after:
                    self._refuse_for(wait)
                    raise ListCapReached(self._refused(name)) from exc
                found = self._find(name)  # the refused answer may have been lost on the way
                if found is not None:
                    return found
                if attempt == retry.attempts:
                    raise
                backoff = min(retry.backoff_max, retry.backoff_initial * 2**attempt)
                self._sleep(wait if wait is not None else backoff)
                continue
            if exhausted is not None and exhausted > retry.max_retry_after:
                self._refuse_for(exhausted)  # that was the last create Klaviyo allows for now
            return ident
        raise AssertionError("unreachable")

    def _refuse_for(self, seconds: float) -> None:
        with self._lock:
            self._refused_until = max(self._refused_until, self._clock() + seconds)

    def _refused(self, name: str) -> str:
        hours = max(self._refused_until - self._clock(), 0.0) / 3600
        return (
            f"Klaviyo did not create list {name!r}: it allows "
            f"{self._config.rate_limits.list_creates_per_day} new lists a day per account "
            f"(again in about {hours:.1f} h); the person is retried on a later run"
        )

    def plan(
        self, moves: Sequence[tuple[str, Sequence[str], Sequence[str]]]
    ) -> list[MembershipCall]:
        """The fewest calls for these (profile id, lists to join, lists to leave) moves."""
        return plan_membership_calls(moves, self._config.jobs.list_batch, paired=False)

    def apply(
        self, calls: Sequence[MembershipCall], pool: Executor
    ) -> tuple[dict[str, str], list[TransientError | None]]:
        """Runs the calls: (profile id -> why its move failed, each call's transient error).

        A list that has to receive members is created when missing; a list that only loses
        members and does not exist needs no call.
        """
        failed: dict[str, str] = {}
        transients: list[TransientError | None] = []
        for future in [pool.submit(self._one, call) for call in calls]:
            reasons, transient = future.result()
            transients.append(transient)
            for ident, reason in reasons.items():
                failed.setdefault(ident, reason)
        return failed, transients

    def _one(self, call: MembershipCall) -> tuple[dict[str, str], TransientError | None]:
        """(profile id -> why its move failed, the transient error that failed the call)."""
        adding = bool(call.add)
        ids = call.add or call.remove
        try:
            for tries_left in (1, 0):
                list_id = self._list_id(call.group, adding)
                if list_id is None:
                    return {}, None  # leaving a list that does not exist: nothing to do
                try:
                    return self._move(list_id, ids, adding), None
                except KlaviyoApiError as exc:
                    if exc.status != 404 or not tries_left:
                        raise
                    self.index.forget(call.group)  # deleted in Klaviyo meanwhile
        except (KlaviyoApiError, ListCapReached) as exc:
            return dict.fromkeys(ids, f"list {call.group!r}: {exc}"), None
        except TransientError as exc:
            return dict.fromkeys(ids, f"list {call.group!r}: {exc}"), exc
        return {}, None

    def _move(self, list_id: str, ids: Sequence[str], add: bool) -> dict[str, str]:
        """Moves ``ids``; a call refused as a whole (400: a profile deleted or merged in
        Klaviyo meanwhile) is halved until the refused ids are found, so one stale profile
        fails only its own person."""
        try:
            self._api.move_members(list_id, ids, add=add)
            return {}
        except KlaviyoApiError as exc:
            if exc.status != 400:
                raise
            if len(ids) == 1:
                return {ids[0]: f"Klaviyo refused the list move: {exc.detail}"}
        half = len(ids) // 2
        return {**self._move(list_id, ids[:half], add), **self._move(list_id, ids[half:], add)}

    def _list_id(self, name: str, create: bool) -> str | None:
        if create:
            return self.index.ensure(name)[0]
        found: Mapping[str, str] = self.index.ids([name])
        return found.get(name)
