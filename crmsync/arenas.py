"""Two glibc malloc arenas per crmsync process instead of up to eight per core.

glibc gives a thread that allocates while another holds the main arena an arena of its
own, up to eight per core, and memory freed in an arena mostly stays in it. A run's
threads (readers, stagers, senders, the recorder, the consent read-back, a vendor's
connection pool) each allocate and free whole batches, so each arena keeps its own
high-water mark: a first sync of 100,000 customers to Klaviyo peaked at 357 MB in one
process, 292 MB with two arenas, in the same time and CPU (bench/e2e, 4 December).

``limit()`` sets the limit for this process (``mallopt``, before its threads start) and,
through the environment, for the processes it starts (planning workers, Celery's pool),
whose glibc reads ``MALLOC_ARENA_MAX`` when they start. An operator's own
``MALLOC_ARENA_MAX`` stands. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

ARENAS = 2
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit() -> bool:
    """Limits this process's arenas and its children's; whether this process's limit changed."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False  # the operator chose, and glibc read it when this process started
    os.environ["MALLOC_ARENA_MAX"] = str(ARENAS)
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, ARENAS))
