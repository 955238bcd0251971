"""How many CPUs this process may run on: what the readers, the planning workers and
SQLite's index builds size themselves by."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container's cpuset or
    ``taskset`` narrows), else the machine's count where the platform cannot tell."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1
