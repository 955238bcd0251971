"""crmsync's processes use two glibc malloc arenas, however many threads allocate; an
operator's MALLOC_ARENA_MAX stands. Counted in a fresh interpreter from its memory map:
each arena but the main one is a heap mapped at a 64 MiB boundary (reserved whole)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import os, sys, threading
from crmsync import arenas

changed = arenas.limit() if sys.argv[1] == "limit" else None

together = threading.Barrier(16)

def churn():  # every thread allocates while the others are alive
    for _ in range(3):
        blocks = [bytearray(4096) for _ in range(100)]  # past pymalloc: glibc's malloc
        together.wait()
        del blocks

threads = [threading.Thread(target=churn) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()

HEAP = 64 << 20
regions = []
with open("/proc/self/maps") as maps:
    for line in maps:
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        regions.append((low, high, fields[1], len(fields) > 5))
heaps = 0
for n, (low, high, perms, named) in enumerate(regions):
    if named or perms != "rw-p" or low % HEAP:
        continue
    size = high - low
    if size < HEAP and n + 1 < len(regions):
        nlow, nhigh, nperms, nnamed = regions[n + 1]
        if nlow == high and nperms == "---p" and not nnamed:
            size += nhigh - nlow
    heaps += size == HEAP
print(changed, heaps, os.environ.get("MALLOC_ARENA_MAX"))
"""

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's arenas: Linux only"
)


def _probe(mode: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_threads_share_two_arenas_and_children_are_told_to() -> None:
    changed, heaps, told = _probe("limit")
    assert changed == "True"
    assert int(heaps) <= 1  # the main arena is not a mapped heap: two arenas in all
    assert told == "2"  # what a process started from here reads when it starts


def test_without_the_limit_the_same_threads_take_arenas_of_their_own() -> None:
    _, heaps, told = _probe("free")
    assert int(heaps) >= 2  # the probe can tell: glibc's default gives more
    assert told == "None"


def test_an_operators_own_setting_stands() -> None:
    changed, heaps, told = _probe("limit", MALLOC_ARENA_MAX="1")
    assert changed == "False" and told == "1"
    assert int(heaps) == 0  # glibc read the operator's 1 at start: the main arena only
