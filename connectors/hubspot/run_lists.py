"""The list moves of one run: held until they fill a call, the rest sent when it ends.

List calls planned per push would leave a part-filled call per list in every push.
Instead the moves of everybody HubSpot has upserted are held across the run (the kit's
``Gathered``, record ids only, adds and removes of a list in one call): a list's calls go
out as soon as they are full, and each list's last remainder when the core collects the
run's list job at the end of the run, which is the per-run floor.

The ledger stays honest through the contract's pending results: a person whose moves
are all confirmed when their push ends is OK; one with a move still held is PENDING on
this run's list job (with their record id, which the ledger keeps with the change), and
``settle`` answers them once everything held has been sent (OK, or FAILED with the
reason one of their moves failed, or NOT_SENT when a move of theirs could not go out
because HubSpot's day is spent: they stay in flight, with no attempt charged). A run
that stops before its end leaves them in flight on that job; the next run's collect
hands ``settle`` their changes, and their moves are rebuilt from the changes and sent
again: adding a record to a list, or removing one, twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

from connectors.hubspot.client import HubSpotApi
from connectors.hubspot.lists import send_calls
from connectors.kit import GroupIndex
from connectors.kit.run_moves import RunMoves
from crmsync.contract import Change, Outcome, PushResult, SharedMoves

LIST_JOB = "lists:"  # the prefix of a run's list job, followed by the run's own token
NO_RECORD = "HubSpot's record id of this contact is not known: sent again"


class RunLists:
    """One run's held list moves (the kit's ``RunMoves``, by record id)."""

    def __init__(
        self,
        api: HubSpotApi,
        index: GroupIndex,
        batch_size: int,
        pool: Executor,
        shared: SharedMoves | None = None,
    ) -> None:
        self._unsent: set[str] = set()  # members of calls not sent: HubSpot's day is spent
        self._moves = RunMoves(
            lambda calls: (send_calls(api, index, calls, pool, self._unsent), []),
            batch_size,
            paired=True,
            prefix=LIST_JOB,
            noun="list",
            shared=shared,
        )
        self.job = self._moves.job

    def move(self, upserted: Sequence[tuple[Change, str]]) -> dict[str, str | None]:
        """Holds the moves of people HubSpot has just upserted (change, record id) and
        sends every call now full. Returns, by person key, those not OK: None while a
        move is held (PENDING), else why a move failed."""
        held = self._moves.hold(
            [(record, c.memberships_add, c.memberships_remove) for c, record in upserted]
        )
        return held.answers([(c.person_key, record) for c, record in upserted])

    def settle(self, job: str, changes: Sequence[Change]) -> list[PushResult]:
        """Final results of a list job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once their moves are sent again."""
        known = [c for c in changes if c.remote_id is not None]
        moves = [(c.remote_id or "", c.memberships_add, c.memberships_remove) for c in known]
        failed, _ = self._moves.finish(job, moves)
        results = []
        for change in changes:
            record = change.remote_id
            if record is None:
                results.append(PushResult(change.person_key, Outcome.FAILED, message=NO_RECORD))
            elif record in self._unsent:  # kept in flight for the next run, nothing charged
                results.append(
                    PushResult(change.person_key, Outcome.NOT_SENT, record, failed.get(record, ""))
                )
            elif record in failed:
                results.append(
                    PushResult(change.person_key, Outcome.FAILED, record, failed[record])
                )
            else:
                results.append(PushResult(change.person_key, Outcome.OK, record))
        return results
