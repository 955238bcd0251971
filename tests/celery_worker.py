"""``python -m tests.celery_worker ARGS``: ``crmsync ARGS`` (a worker), which, when
``CRMSYNC_TEST_STALL_FILE`` names a file that does not exist yet, stalls in the first
batch it pushes: after the destination answered, before the answers are recorded (the
vendor has the batch, the ledger knows nothing). It creates that file first, holding its
process id, so the test knows whom to SIGKILL; only one worker ever stalls.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from distributed import tasks

_record = tasks.record_results


def _stalling_record(*args: Any, **kwargs: Any) -> dict[str, int]:
    marker = os.environ.get("CRMSYNC_TEST_STALL_FILE")
    if marker:
        try:
            handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # another worker stalled already: this one works
        else:
            os.write(handle, str(os.getpid()).encode())
            os.close(handle)
            while True:  # until the test kills this process
                time.sleep(1)
    return _record(*args, **kwargs)


if __name__ == "__main__":
    tasks.record_results = _stalling_record
    from cli import main

    sys.argv[0] = "crmsync"
    main()
