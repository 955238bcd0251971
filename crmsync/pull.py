"""Pull: read each stream of a source since its cursor and stage it in batches.

The cursor moves only in the transaction that stores the stream's last batch, to the
newest ``updated_at`` taken, capped at the run's start. Earlier batches are committed
without moving it, so a crash part-way re-reads the stream from the old cursor (minus the
lookback window) and de-duplication by (id, updated_at) makes the re-read harmless.

A ``Versioned`` source says cheaply whether a stream may have changed. Its token is
taken before the read and kept with the cursor when the read leaves nothing for later;
a run (not ``full``) that finds the same token again does not read the stream at all.
A crash part-way keeps the old token, which no longer matches, so the stream is read.

Batches are large (``BATCH``): staging writes each in one transaction, and its cost per
batch (look-ups, statements, a commit) is then spread over many records, while memory
stays bounded by one batch of records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmsync.contract import Source, Versioned
from crmsync.records import Cart, Customer, Order, RecordIssue, Stream
from crmsync.stopwatch import Stopwatch
from state.staging import StageStats
from state.store import Store, StreamVersion

log = logging.getLogger("crmsync.pull")

BATCH = 20_000


@dataclass
class PullStats:
    streams: dict[str, StageStats] = field(default_factory=dict)


def pull_source(
    store: Store,
    source_name: str,
    source: Source,
    *,
    until: datetime,
    lookback: timedelta,
    full: bool = False,
    batch_size: int = BATCH,
    progress: Callable[[int], None] | None = None,
    stopwatch: Stopwatch | None = None,
) -> PullStats:
    stats = PullStats()
    watch = stopwatch or Stopwatch()
    for stream in source.streams():
        stats.streams[stream.value] = _pull_stream(
            store,
            source_name,
            source,
            stream,
            until=until,
            lookback=lookback,
            full=full,
            batch_size=batch_size,
            progress=progress,
            watch=watch,
        )
    return stats


def _pull_stream(
    store: Store,
    source_name: str,
    source: Source,
    stream: Stream,
    *,
    until: datetime,
    lookback: timedelta,
    full: bool,
    batch_size: int,
    progress: Callable[[int], None] | None,
    watch: Stopwatch,
) -> StageStats:
    started = time.perf_counter()
    version = StreamVersion(source.version(stream)) if isinstance(source, Versioned) else None
    if not full and _unchanged(store, source_name, stream, version):
        log.info("pulled %s.%s: unchanged since its last read", source_name, stream.value)
        watch.add("pull.read", time.perf_counter() - started)
        return StageStats(not_read=True)
    staging = 0.0
    cursor = None if full else store.cursor(source_name, stream.value)
    since = cursor - lookback if cursor is not None else None
    total = StageStats()
    records: list[Customer | Order | Cart] = []
    issues: list[RecordIssue] = []
    newest: datetime | None = None
    for item in source.read(stream, since, until):
        if isinstance(item, RecordIssue):
            issues.append(item)
        elif item.updated_at is not None and item.updated_at > until:
            total.received += 1  # counted, so that what was read adds up
            total.later += 1  # changed after the run started: the next run takes it
            continue
        else:
            records.append(item)
            if item.updated_at is not None and (newest is None or item.updated_at > newest):
                newest = item.updated_at
        if len(records) + len(issues) >= batch_size:  # memory: one batch of items
            mark = time.perf_counter()
            total.add(store.stage(source_name, stream, records, issues))
            staging += time.perf_counter() - mark
            if progress and records:
                progress(len(records))
            records, issues = [], []
    position = max(newest, cursor) if newest and cursor else (newest or cursor)
    mark = time.perf_counter()
    if version is not None and total.later:
        version = StreamVersion(None)  # a later run must read what was left for it
    total.add(store.stage(source_name, stream, records, issues, cursor=position, version=version))
    staging += time.perf_counter() - mark
    watch.add("pull.stage", staging)
    watch.add("pull.read", time.perf_counter() - started - staging)
    if progress and records:
        progress(len(records))
    log.info(
        "pulled %s.%s: %d received = %d staged + %d unchanged + %d quarantined + %d later"
        " (%d corrected)",
        source_name,
        stream.value,
        total.received,
        total.staged,
        total.unchanged,
        total.quarantined,
        total.later,
        total.corrected,
    )
    return total


def _unchanged(
    store: Store, source_name: str, stream: Stream, version: StreamVersion | None
) -> bool:
    """True when the stream's version is the one kept after its last complete read."""
    if version is None or version.token is None:
        return False
    return version.token == store.source_version(source_name, stream.value)
