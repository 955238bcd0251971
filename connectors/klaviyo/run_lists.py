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
before them, it would leave their remainders for a later run (on workers, for those the
collecting process found still running: ``KlaviyoDestination._imports_open``). Once it
has been settled, moves that still arrive (an import job that only completed afterwards)
go out at once.

A run that stops before its end (killed, or its collect never reached) leaves the people
in flight on that job; the next run's collect hands ``settle`` their changes, and their
moves are rebuilt from the changes and sent again: adding a profile to a list, or
removing one, twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor

from connectors.kit import Move
from connectors.kit.run_moves import Held, RunMoves
from connectors.klaviyo.lists import KlaviyoLists
from crmsync.contract import Change, Outcome, PushResult, SharedMoves
from crmsync.errors import TransientError

LIST_JOB = "lists:"  # the prefix of a run's list job, followed by the run's own token
HELD = "list moves held for the end of the run"
# person key -> profile id, for changes waiting without one (see ``RunLists.settle``)
Finder = Callable[[Sequence[Change]], Mapping[str, str]]


class RunLists:
    """One run's held list moves (the kit's ``RunMoves``, by profile id)."""

    def __init__(
        self,
        lists: KlaviyoLists,
        batch_size: int,
        pool: Executor,
        find: Finder,
        shared: SharedMoves | None = None,
    ) -> None:
        self._find = find
        self._moves = RunMoves(
            lambda calls: lists.apply(calls, pool),
            batch_size,
            paired=False,
            prefix=LIST_JOB,
            noun="list",
            shared=shared,
        )
        self.job = self._moves.job

    def move(self, moves: Sequence[Move]) -> Held:
        """Holds these (profile id, lists to join, lists to leave) moves and sends every
        call now full (everything, once the run's job is settled)."""
        return self._moves.hold(moves)

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
        moves = [
            (ids[c.person_key], c.memberships_add, c.memberships_remove)
            for c in changes
            if c.person_key in ids
        ]
        failed, transients = self._moves.finish(job, moves)
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
