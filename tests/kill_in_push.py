"""``python -m tests.kill_in_push ARGS``: ``crmsync ARGS``, SIGKILLed at one exact point of a
push, for the contract's crash scenario.

``CRMSYNC_TEST_KILL_MARKER`` names a membership: the process kills itself on the first
batch holding a change that adds it, either right after the destination answered and
before the answer is recorded (``CRMSYNC_TEST_KILL_WHEN=before_ack``: the vendor has
applied the batch, the ledger knows nothing), or right after the answer was recorded
when it holds pending jobs (``after_submit``: jobs submitted, never collected).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from crmsync import push
from crmsync.contract import Change, Outcome, PushResult

_record = push.Pusher._record


def _killing_record(
    self: push.Pusher, batch: Sequence[Change], results: Sequence[PushResult]
) -> None:
    marker = os.environ["CRMSYNC_TEST_KILL_MARKER"]
    hit = any(marker in change.memberships_add for change in batch)
    if hit and os.environ.get("CRMSYNC_TEST_KILL_WHEN", "before_ack") == "before_ack":
        os.kill(os.getpid(), signal.SIGKILL)
    _record(self, batch, results)
    if hit and any(r.outcome is Outcome.PENDING for r in results):
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    push.Pusher._record = _killing_record  # type: ignore[method-assign]
    from crmsync.cli import main

    sys.argv[0] = "crmsync"
    main()
