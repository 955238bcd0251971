"""Merge-joining key-ordered row streams, one person (key) at a time.

Each stream is first cut into (key, group) pairs; the merge then keeps a heap of the
streams' next keys, so a person costs one heap step per stream that has rows for them and
the sparse streams (phone links, consent events, failures) cost almost nothing. This runs
for every person of a store, which is why it is a plain loop rather than
``heapq.merge`` with ``itertools.groupby`` and key functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from heapq import heapify, heappop, heapreplace
from typing import Any


def grouped(rows: Iterable[Any]) -> Iterator[tuple[str, list[Any]]]:
    """(key, rows with that key) from rows ordered by their first column."""
    key: str | None = None
    group: list[Any] = []
    for row in rows:
        if row[0] != key:
            if group:
                yield key, group  # type: ignore[misc]
            key, group = row[0], [row]
        else:
            group.append(row)
    if group:
        yield key, group  # type: ignore[misc]


def keyed(rows: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """(key, row) from rows with unique keys in order (ledger, failures)."""
    for row in rows:
        yield row[0], row


_END = object()


def merge_groups(
    streams: Sequence[Iterator[tuple[str, Any]]],
) -> Iterator[tuple[str, list[Any]]]:
    """Merge-joins key-ordered (key, group) streams: yields (key, one slot per stream).

    A slot is the stream's group for that key, or None. A heap of the streams' next keys
    costs one comparison chain per stream that has the key, so the sparse streams (links,
    consent, failures) cost almost nothing.
    """
    count = len(streams)
    advance = [stream.__next__ for stream in streams]
    pending: list[Any] = [None] * count
    heap: list[tuple[str, int]] = []
    for index, step in enumerate(advance):
        item = _step(step)
        if item is not _END:
            key, pending[index] = item
            heap.append((key, index))
    heapify(heap)
    while heap:
        key = heap[0][0]
        slots: list[Any] = [None] * count
        while heap and heap[0][0] == key:
            index = heap[0][1]
            slots[index] = pending[index]
            item = _step(advance[index])
            if item is _END:
                heappop(heap)
            else:
                heapreplace(heap, (item[0], index))
                pending[index] = item[1]
        yield key, slots


def _step(step: Any) -> Any:
    try:
        return step()
    except StopIteration:
        return _END
