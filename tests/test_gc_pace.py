"""crmsync's processes collect cyclic garbage at a wider pace (``crmsync.gc_pace``): the
command group and every child process; cycles are still collected; a wider pace chosen
before stands."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from crmsync import gc_pace

# Counts the collections of each generation while batches of containers are made and
# dropped, as a run's records are; then whether a cycle made afterwards is still collected.
PROBE = r"""
import gc, sys, weakref
from crmsync import gc_pace

changed = gc_pace.widen() if sys.argv[1] == "widen" else None
counts = [0, 0, 0]
gc.callbacks.append(
    lambda phase, info: counts.__setitem__(info["generation"], counts[info["generation"]] + 1)
    if phase == "start" else None
)
kept = []
for batch in range(50):  # a batch's rows live until it is written, then go
    rows = [(str(n), [n], {"n": n}) for n in range(20_000)]
    kept.append(rows[0])
    del rows

class Node:
    pass

node = Node()
node.self = node  # a cycle: only the collector frees it
alive = weakref.ref(node)
del node
rows = [(str(n), [n]) for n in range(60_000)]  # the next batch
print(changed, gc.get_threshold()[0], *counts, alive() is None)
"""


def _probe(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_wide_pace_collects_far_less_often_and_still_frees_cycles() -> None:
    changed, young, *counts, freed = _probe("widen")
    _, default_young, *default_counts, default_freed = _probe("leave")
    assert (changed, young) == ("True", str(gc_pace.YOUNG))
    assert int(default_young) < gc_pace.YOUNG  # CPython's own pace is narrower
    first, _, full = map(int, counts)
    d_first, _, d_full = map(int, default_counts)
    # three million containers made, 60,000 at a time: about one young collection a
    # batch, no full one; CPython's pace: some 85 a batch, and full ones
    assert first <= 100 and full == 0
    assert d_first >= 20 * first and d_full >= 1  # the pace the probe shows as before
    assert freed == default_freed == "True"  # the cycle is freed either way


# what the heap is at the very end: an exit handler registered before ``widen`` runs
# after the one ``widen`` registers (they run last in, first out)
EXIT_PROBE = r"""
import atexit, gc, sys
from crmsync import gc_pace

atexit.register(lambda: print(gc.get_freeze_count() > 0, flush=True))
if sys.argv[1] == "widen":
    gc_pace.widen()
kept = [[n] for n in range(1000)]  # objects alive at the exit
"""


def test_a_process_at_the_wide_pace_ends_without_walking_its_heap_again() -> None:
    def frozen_at_exit(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_PROBE, mode], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert frozen_at_exit("widen") == "True"
    assert frozen_at_exit("leave") == "False"


@pytest.fixture
def restored_pace() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_pace")
def test_a_wider_pace_chosen_before_stands_and_collection_switched_off_stays_off() -> None:
    gc.set_threshold(gc_pace.YOUNG * 4, 10, 10)
    assert not gc_pace.widen()
    assert gc.get_threshold()[0] == gc_pace.YOUNG * 4
    gc.set_threshold(0, 10, 10)
    assert not gc_pace.widen()
    assert gc.get_threshold()[0] == 0
    gc.set_threshold(700, 10, 10)
    assert gc_pace.widen()
    assert gc.get_threshold() == (gc_pace.YOUNG, 10, 10)


@pytest.mark.usefixtures("restored_pace")
def test_every_command_runs_at_the_wide_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import main

    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")  # the arenas' limit leaves this process be
    gc.set_threshold(700, 10, 10)
    # the group's own code runs before a command's options are read (--help among them)
    done = CliRunner().invoke(main, ["status", "--help"])
    assert done.exit_code == 0, done.output
    assert gc.get_threshold()[0] == gc_pace.YOUNG


def report_pace(_task: str, result: str, _parent: str) -> None:
    """A child's main: writes its collector's threshold to the result pipe's file."""
    import os

    os.write(int(result), str(gc.get_threshold()[0]).encode())


@pytest.mark.usefixtures("restored_pace")
def test_a_child_process_runs_at_the_wide_pace_whatever_its_parent_does() -> None:
    import os

    from crmsync import child

    gc.set_threshold(700, 10, 10)  # the parent's pace is not what the child gets
    started = child.start("pace", "tests.test_gc_pace:report_pace")
    try:
        assert started.process.wait(60) == 0
        said = os.read(started.results.fileno(), 100).decode()
    finally:
        started.stop()
    assert said == str(gc_pace.YOUNG)
