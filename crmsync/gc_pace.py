"""How often the cyclic garbage collector runs in crmsync's processes.

CPython collects its youngest generation after every 700 more container objects (tuples,
lists, dicts) have been made than freed, and the whole heap after a hundred of those,
once the objects that survived grew by a quarter. A run makes millions of short-lived
containers that no cycle holds (records, rows, batches, changes), so at that pace the
collector walks the whole heap again and again while finding little: a first sync of
100,000 customers (bench/e2e, PostgreSQL state, 4 December) spent 3.2 s of its run's
process in it, 2.2 s of that in 34 full collections, and 0.7 s in each reader.

With a youngest generation of ``YOUNG`` objects the same run spent 1.0 s there and
0.3 s per reader, with no full collection; the first sync took 31.1 s against 34.1 s
(35.8 -> 32.0 s of CPU) and peaked at 221 MB against 210 MB. Cycles are still
collected, later: at 200,000 the peak rose to 330 MB (the cycles some libraries leave
behind, such as SQLAlchemy's temporary tables and httpx's responses, waited longer)
for no more time saved; at 10,000 the run spent 1.8 s collecting.

``widen()`` sets that pace for this process: the command group calls it first, and every
child process (``crmsync.child``) before it imports anything else; Celery's pool
processes, forked from the worker, inherit it. A process whose youngest generation is
already larger (a program that embeds crmsync and chose) keeps its own.

``widen()`` also has the process's exit skip the collector: as the interpreter ends, it
collects the whole heap again while it tears the modules down, walking every object the
imports made (SQLAlchemy, pydantic, psycopg, httpx), to free memory the operating system
takes back anyway. An exit handler freezes the heap first (``gc.freeze``: what exists is
left out of every later collection); objects are still released as their modules are
cleared, exit handlers (logging's flush among them) still run, and crmsync closes its
files and connections itself rather than leaving them to a finaliser. A process with
only crmsync's imports then ended in 0.60 to 0.84 s against 0.77 to 0.93 s (six runs
each, alternating, 4 December 2026).
"""

from __future__ import annotations

import atexit
import gc

YOUNG = 50_000  # net container allocations between collections of the youngest generation


def widen() -> bool:
    """Collects the youngest generation every ``YOUNG`` allocations, the older ones at
    their usual ratios to it; whether the pace changed."""
    young, middle, old = gc.get_threshold()
    if young >= YOUNG or young == 0:  # already wider, or collection switched off
        return False
    gc.set_threshold(YOUNG, middle, old)
    atexit.register(gc.freeze)  # once: the pace changes once per process
    return True
