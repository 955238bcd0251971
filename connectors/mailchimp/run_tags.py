"""The tag moves of one run: held until they fill a call, the rest sent when it ends.

Tag calls planned per push would leave a part-filled call per tag in every push. Instead
the moves of everybody Mailchimp has upserted are held across the run (the kit's
``Gathered``, addresses only): a tag's calls go out as soon as they are full, and each
tag's last remainder when the core collects the run's tag job at the end of the run.

The ledger stays honest through the contract's pending results: a person whose moves
are all confirmed when their push ends is OK; one with a move still held is PENDING on
this run's tag job, and ``settle`` answers them once everything held has been sent (OK,
or FAILED with the reason one of their moves failed). A run that stops before its end
(killed, or its collect never reached) leaves them in flight on that job; the next run's
collect hands ``settle`` their changes, and their moves are rebuilt from the changes and
sent again: adding a member to a tag, or removing one, twice is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

from connectors.kit import GroupIndex
from connectors.kit.run_moves import RunMoves
from connectors.mailchimp.client import MailchimpApi
from connectors.mailchimp.members import subscriber_hash
from connectors.mailchimp.tags import send_calls
from crmsync.contract import Change, Outcome, PushResult, SharedMoves

TAG_JOB = "tags:"  # the prefix of a run's tag job, followed by the run's own token


class RunTags:
    """One run's held tag moves (the kit's ``RunMoves``, by lower-cased address)."""

    def __init__(
        self,
        api: MailchimpApi,
        index: GroupIndex,
        list_id: str,
        batch_size: int,
        pool: Executor,
        shared: SharedMoves | None = None,
    ) -> None:
        self._moves = RunMoves(
            lambda calls: (send_calls(api, index, list_id, calls, pool), []),
            batch_size,
            paired=True,
            prefix=TAG_JOB,
            noun="tag",
            shared=shared,
        )
        self.job = self._moves.job

    def move(self, upserted: Sequence[Change]) -> dict[str, str | None]:
        """Holds the moves of people Mailchimp has just upserted and sends every call now
        full. Returns, by person key, those not OK: None while a move is held (PENDING),
        else why a move failed."""
        moves = [(_member(c), c.memberships_add, c.memberships_remove) for c in upserted]
        held = self._moves.hold(moves)
        return held.answers([(c.person_key, _member(c)) for c in upserted])

    def settle(self, job: str, changes: Sequence[Change]) -> list[PushResult]:
        """Final results of a tag job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once their moves are sent again."""
        known = [c for c in changes if c.email]
        moves = [(_member(c), c.memberships_add, c.memberships_remove) for c in known]
        failed, _ = self._moves.finish(job, moves)
        results = []
        for change in changes:
            email = change.email or ""
            reason = failed.get(_member(change))
            remote = subscriber_hash(email) if email else None
            if reason is None:
                results.append(PushResult(change.person_key, Outcome.OK, remote))
            else:
                results.append(PushResult(change.person_key, Outcome.FAILED, remote, reason))
        return results


def _member(change: Change) -> str:
    """A member of a tag call: the address, lower-cased as Mailchimp's answers give it."""
    return (change.email or "").lower()
