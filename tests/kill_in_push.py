"""``python -m tests.kill_in_push ARGS``: ``crmsync ARGS``, SIGKILLed at one exact point of a
push, for the contract's crash scenario.

``CRMSYNC_TEST_KILL_MARKER`` names a membership: the process kills itself on the first
batch holding a change that adds it, either right after the destination answered and
before the answer is recorded (``CRMSYNC_TEST_KILL_WHEN=before_ack``: the vendor has
applied the batch, the ledger knows nothing), or right after the answer was recorded
when it holds pending jobs (``after_submit``: jobs submitted, never collected), or right
after a collected job's answers were recorded that leave people pending on another job
(``handed_on``: Klaviyo's list moves held for the end of the run, never sent).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from crmsync.contract import Change, Outcome, PushResult
from engine import push

_record = push.Pusher._record
_collect = push.Pusher.collect
_collecting = threading.Event()  # set: a job's answers are being recorded, not a push's


def _flagging_collect(self: push.Pusher, *args: Any, **kwargs: Any) -> int:
    _collecting.set()
    try:
        return _collect(self, *args, **kwargs)
    finally:
        _collecting.clear()


def _killing_record(
    self: push.Pusher, batch: Sequence[Change], results: Sequence[PushResult]
) -> None:
    marker = os.environ["CRMSYNC_TEST_KILL_MARKER"]
    hit = any(marker in change.memberships_add for change in batch)
    if hit and os.environ.get("CRMSYNC_TEST_KILL_WHEN", "before_ack") == "before_ack":
        os.kill(os.getpid(), signal.SIGKILL)
    _record(self, batch, results)
    pending = any(r.outcome is Outcome.PENDING for r in results)
    handed_on = os.environ.get("CRMSYNC_TEST_KILL_WHEN") == "handed_on"
    if hit and pending and handed_on is _collecting.is_set():
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    push.Pusher._record = _killing_record  # type: ignore[method-assign]
    push.Pusher.collect = _flagging_collect  # type: ignore[method-assign]
    from cli import main

    sys.argv[0] = "crmsync"
    main()
