"""The list moves of one run: held until they fill a call, the rest sent when the run ends.

List calls planned per settled import job would leave a part-filled call per list and
direction in every job: a run of many jobs pays those remainders again and again.
Instead the moves of everybody whose profile Klaviyo has confirmed are held across the
run (the kit's ``Gathered``, profile ids only, adds and removes in calls of their own):
a list's calls go out as soon as they are full, and each list's last remainders when the
core collects the run's list job at the end of the run, which is the per-run floor.

The ledger stays honest through the contract's pending results: a person whose moves
are all confirmed when their settle ends is OK; one with a move still held is PENDING on
this run's list job (with their profile id, which the ledger keeps with the change), and
``settle`` answers them once everything held has been sent (OK, or FAILED with the reason
one of their moves failed). The list job waits for the run's own import jobs: settled
before them, it would leave their remainders for a later run. Once it has been settled,
moves that still arrive (an import job that only completed afterwards) go out at once.

A run that stops before its end (killed, or its collect never reached) leaves the people
in flight on that job; the next run's collect hands ``settle`` their changes, and their
moves are rebuilt from the changes and sent again: adding a profile to a list, or
removing one, twice is harmless.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor

from connectors.kit import Gathered, MembershipCall, Move
from connectors.klaviyo.lists import KlaviyoLists
from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import TransientError

LIST_JOB = "lists:"  # the prefix of a run's list job, followed by the run's own token
HELD = "list moves held for the end of the run"
# person key -> profile id, for changes waiting without one (see ``RunLists.settle``)
Finder = Callable[[Sequence[Change]], Mapping[str, str]]


class RunLists:
    """One run's held list moves, and the failures of people answered PENDING."""

    def __init__(self, lists: KlaviyoLists, batch_size: int, pool: Executor, find: Finder) -> None:
        self._lists, self._pool, self._find = lists, pool, find
        self.job = LIST_JOB + uuid.uuid4().hex  # one per destination, so one per run
        self._held = Gathered(batch_size, paired=False)
        self._failed: dict[str, str] = {}  # profile id -> why a move failed (PENDING people)
        self._closed = False  # this run's job was settled: moves go out at once from now
        self._lock = threading.Lock()  # a push and a collect of one run could overlap

    def move(
        self, moves: Sequence[Move]
    ) -> tuple[dict[str, str], list[TransientError | None], set[str]]:
        """Holds these (profile id, lists to join, lists to leave) moves and sends every
        call now full (everything, once the run's job is settled).

        Returns (profile id -> why a move of theirs failed, each call's transient error,
        the profile ids of these moves still held: their people are PENDING).
        """
        with self._lock:
            self._held.add(moves)
            calls = self._held.rest() if self._closed else self._held.full()
            failed, transients = self._send(calls)
            waiting = self._held.waiting()
            here = {member for member, _, _ in moves}
            held = here & waiting
            # the failures of people answered PENDING, now or by an earlier settle
            self._failed.update(
                (member, why) for member, why in failed.items() if member not in here
            )
            self._failed.update((member, failed[member]) for member in held if member in failed)
        return failed, transients, held

    def settle(self, job: str, changes: Sequence[Change]) -> list[PushResult]:
        """Final results of a list job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once their moves are sent again.

        Raises ``TransientError`` when every call failed transiently (Klaviyo is down):
        the people stay in flight on the job and are settled later.
        """
        ids = {c.person_key: c.remote_id for c in changes if c.remote_id}
        missing = [c for c in changes if c.person_key not in ids]
        if missing:  # a change waiting without its profile id: found by e-mail or phone
            ids.update(self._find(missing))
        with self._lock:
            if job == self.job:
                # only the first page finds anything still held
                self._closed = True
                failed, transients = self._send(self._held.rest())
                self._failed.update(failed)
                failed = self._failed
            else:
                moves = [
                    (ids[c.person_key], c.memberships_add, c.memberships_remove)
                    for c in changes
                    if c.person_key in ids and (c.memberships_add or c.memberships_remove)
                ]
                failed, transients = self._send(self._lists.plan(moves))
        if transients and all(t is not None for t in transients):
            first = transients[0]
            assert first is not None
            raise TransientError(f"Klaviyo is unreachable: {first}", retry_after=first.retry_after)
        results = []
        for change in changes:
            key, profile = change.person_key, ids.get(change.person_key)
            if profile is None:
                why = "Klaviyo has no profile for this person any more: imported again"
                results.append(PushResult(key, Outcome.FAILED, message=why))
            elif profile in failed:
                results.append(PushResult(key, Outcome.FAILED, profile, failed[profile]))
            else:
                results.append(PushResult(key, Outcome.OK, profile))
        return results

    def _send(
        self, calls: Sequence[MembershipCall]
    ) -> tuple[dict[str, str], list[TransientError | None]]:
        if not calls:
            return {}, []
        try:
            return self._lists.apply(calls, self._pool)
        except BaseException as exc:
            # whatever stopped the calls (a bug, an interrupt): nobody in them is
            # confirmed, and those answered PENDING must not be acknowledged later
            for call in calls:
                reason = f"list {call.group!r} not moved: {exc}"
                self._failed.update((member, reason) for member in call.members())
            raise
