"""The readers, the planning workers and SQLite's index builds count the CPUs this
process may run on, which a container's cpuset or ``taskset`` narrows below the machine's."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

_PINNED = """
import os
from crmsync.cpus import usable_cpus
from engine.parallel import default_workers
from engine.read_ahead import reader_count
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print(usable_cpus(), reader_count(), default_workers(), os.cpu_count())
"""


def test_a_process_pinned_to_one_cpu_counts_one() -> None:
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a platform with CPU affinity and at least 2 CPUs")
    found = subprocess.run(
        [sys.executable, "-c", _PINNED], cwd=ROOT, capture_output=True, text=True, check=True
    )
    usable, readers, workers, machine = map(int, found.stdout.split())
    assert (usable, readers, workers) == (1, 1, 1)
    assert machine >= 2  # the machine's count would have said more
