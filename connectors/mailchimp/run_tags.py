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

import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor

from connectors.kit import Gathered, GroupIndex, MembershipCall, plan_membership_calls
from connectors.mailchimp.client import MailchimpApi
from connectors.mailchimp.members import subscriber_hash
from connectors.mailchimp.tags import send_calls
from crmsync.contract import Change, Outcome, PushResult

TAG_JOB = "tags:"  # the prefix of a run's tag job, followed by the run's own token


class RunTags:
    """One run's held tag moves, and the failures of people answered PENDING."""

    def __init__(
        self,
        api: MailchimpApi,
        index: GroupIndex,
        list_id: str,
        batch_size: int,
        pool: Executor,
    ) -> None:
        self._api, self._index, self._list_id, self._pool = api, index, list_id, pool
        self._batch_size = batch_size
        self.job = TAG_JOB + uuid.uuid4().hex  # one per destination, so one per run
        self._held = Gathered(batch_size, paired=True)
        # lower-cased address -> why a move failed, for people answered PENDING
        self._failed: dict[str, str] = {}
        self._lock = threading.Lock()  # push and collect of one run could overlap

    def move(self, upserted: Sequence[Change]) -> dict[str, str | None]:
        """Holds the moves of people Mailchimp has just upserted and sends every call now
        full. Returns, by person key, those not OK: None while a move is held (PENDING),
        else why a move failed."""
        with self._lock:
            self._held.add(
                (c.email or "", c.memberships_add, c.memberships_remove)
                for c in upserted
                if c.memberships_add or c.memberships_remove
            )
            failed = self._send(self._held.full())
            waiting = self._held.waiting()
            answers: dict[str, str | None] = {}
            here: set[str] = set()
            for change in upserted:
                email = change.email or ""
                here.add(email.lower())
                reason = failed.get(email.lower())
                if email in waiting:
                    answers[change.person_key] = None
                    if reason is not None:
                        self._failed[email.lower()] = reason
                elif reason is not None:
                    answers[change.person_key] = reason
            # people of earlier pushes, waiting for their answer until the run ends
            self._failed.update((e, r) for e, r in failed.items() if e not in here)
        return answers

    def settle(self, job: str, changes: Sequence[Change]) -> list[PushResult]:
        """Final results of a tag job's people (any page of them): this run's job once
        everything held is sent; an earlier run's once their moves are sent again."""
        with self._lock:
            if job == self.job:
                # only the first page finds anything still held
                self._failed.update(self._send(self._held.rest()))
                failed = self._failed
            else:
                moves = [
                    (c.email, c.memberships_add, c.memberships_remove)
                    for c in changes
                    if c.email and (c.memberships_add or c.memberships_remove)
                ]
                calls = plan_membership_calls(moves, self._batch_size, paired=True)
                failed = self._send(calls)
        results = []
        for change in changes:
            email = change.email or ""
            reason = failed.get(email.lower())
            remote = subscriber_hash(email) if email else None
            if reason is None:
                results.append(PushResult(change.person_key, Outcome.OK, remote))
            else:
                results.append(PushResult(change.person_key, Outcome.FAILED, remote, reason))
        return results

    def _send(self, calls: Sequence[MembershipCall]) -> dict[str, str]:
        try:
            return send_calls(self._api, self._index, self._list_id, calls, self._pool)
        except BaseException as exc:
            # whatever stopped the calls (a refused key, a bug): nobody in them is
            # confirmed, and those answered PENDING must not be acknowledged later
            for call in calls:
                reason = f"tag {call.group!r} not applied: {exc}"
                self._failed.update((email.lower(), reason) for email in call.members())
            raise
