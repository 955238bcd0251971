"""Pull: read each stream of a source since its cursor and stage it in batches.

The cursor moves only in the transaction that stores the stream's last batch, to the
newest ``updated_at`` taken, capped at the run's start. Earlier batches are committed
without moving it, so a crash part-way re-reads the stream from the old cursor (minus the
lookback window) and de-duplication by (id, updated_at) makes the re-read harmless.

A ``Versioned`` source says cheaply whether a stream may have changed. Its token is
taken before the read and kept with the cursor when the read leaves nothing for later;
a run (not ``full``) that finds the same token again does not read the stream at all.
A crash part-way keeps the old token, which no longer matches, so the stream is read.
A ``Resumable`` source also tells where a complete read ended (an export file's whole
lines, hashed); that point is kept with the token, and the next read (not ``full``) is
given it: a file that has only grown since is read from there, its start proved the same
by hashing it again, so a run costs what was appended, not the whole file.

Batches are large (``BATCH``): staging writes each in one transaction, and its cost per
batch (look-ups, statements, a commit) is then spread over many records, while memory
stays bounded by a few batches of records. Reading and building the staging rows runs
in a child process beside the staging when the read is large (``engine.read_ahead``).
Each stream is staged inside ``Store.loading``: a load into an empty table (a first
sync) builds the table's secondary indexes once at its end rather than row by row.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmsync.contract import Sized, Source, Versioned
from crmsync.progress import NoProgress, Progress, pull_stage
from crmsync.records import Stream
from crmsync.stopwatch import Stopwatch
from engine.read_ahead import Batch, Read, SourceRecipe, reader, worth_reading_ahead
from state.staging import StageStats
from state.store import Store, StreamVersion
from state.timeutil import now_ms

log = logging.getLogger("engine.pull")

BATCH = 20_000
# between a stream's version and where its last read ended, as they are kept together
POINT_SEPARATOR = "\n"


@dataclass
class PullStats:
    streams: dict[str, StageStats] = field(default_factory=dict)


@dataclass(frozen=True)
class _Planned:
    """A stream to read: from where, and what the source said its version was."""

    read: Read
    cursor: datetime | None
    version: StreamVersion | None


def pull_source(
    store: Store,
    source_name: str,
    source: Source,
    *,
    until: datetime,
    lookback: timedelta,
    full: bool = False,
    batch_size: int = BATCH,
    progress: Progress | None = None,
    stopwatch: Stopwatch | None = None,
    recipe: SourceRecipe | None = None,
) -> PullStats:
    """Reads and stages every stream of ``source``. With a ``recipe`` (how to build the
    source in another process), a large read runs in a child beside the staging."""
    stats = PullStats()
    watch = stopwatch or Stopwatch()
    shown = progress or NoProgress()
    started = time.perf_counter()
    planned: list[_Planned] = []
    for stream in source.streams():
        version = StreamVersion(source.version(stream)) if isinstance(source, Versioned) else None
        kept, point = _kept(store, source_name, stream, version)
        if not full and version is not None and version.token is not None and kept == version.token:
            log.info("pulled %s.%s: unchanged since its last read", source_name, stream.value)
            stats.streams[stream.value] = StageStats(not_read=True)
            continue
        cursor = None if full else store.cursor(source_name, stream.value)
        since = cursor - lookback if cursor is not None else None
        resume = None if full else point
        planned.append(_Planned(Read(stream, since, resume), cursor, version))
    reads = [p.read for p in planned]
    if recipe is not None and not worth_reading_ahead(source, reads, full):
        recipe = None
    with reader(source, source_name, reads, until, batch_size, recipe) as batches:
        for group in _in_turn(planned):
            loads: dict[Read, _Load] = {}
            with ExitStack() as loading:  # each stream's own, left at its last batch
                for p in group:
                    loads[p.read] = _Load(store, source_name, source, p, shown, watch)
                    loading.enter_context(loads[p.read].loading)
                for read, batch, last in batches.arriving([p.read for p in group]):
                    loads[read].take(batch, last)
            for load in loads.values():
                stats.streams[load.stream.value] = load.total
        watch.add("pull.read", batches.seconds)
    watch.add("pull", time.perf_counter() - started)
    return stats


def _in_turn(planned: list[_Planned]) -> list[list[_Planned]]:
    """The reads staged together, group after group: the customers first, so that the
    orders and carts they own find their person's key at once (staged before it, each
    would be keyed again when its customer comes), then every other stream at once."""
    first = [p for p in planned if p.read.stream is Stream.CUSTOMERS]
    rest = [p for p in planned if p.read.stream is not Stream.CUSTOMERS]
    return [group for group in (first, rest) if group]


class _Load:
    """One stream's staging, a batch at a time as its batches come, inside
    ``Store.loading`` (``loading``, left once its last batch is staged); the last one
    moves the cursor and keeps the version."""

    def __init__(
        self,
        store: Store,
        source_name: str,
        source: Source,
        planned: _Planned,
        progress: Progress,
        watch: Stopwatch,
    ) -> None:
        self.store, self.source_name, self.planned, self.watch = store, source_name, planned, watch
        self.stream = planned.read.stream
        self.progress, self.stage = progress, pull_stage(source_name, self.stream.value)
        self.started = False  # its bar is shown from its first batch on
        size = source.size(self.stream) if isinstance(source, Sized) else None
        self.shows = _Shown(progress, self.stage, size)
        self.total = StageStats()
        self.begun = now_ms()  # when this read's issues count as seen (``stage_built``)
        self.newest: datetime | None = None
        self.loading = ExitStack()
        self.loading.enter_context(store.loading(self.stream))

    def take(self, batch: Batch, last: bool) -> None:
        if not self.started:
            self.progress.start(self.stage, unit="records")
            self.started = True
        self.newest = _newer(self.newest, batch.newest)
        if not last:  # the cursor stays
            self._stage(batch)
            return
        position = _newer(self.newest, self.planned.cursor)
        version = self.planned.version
        if version is not None and (self.total.later or batch.later):
            version = StreamVersion(None)  # a later run must read what was left for it
        elif version is not None and version.token is not None and batch.resume is not None:
            # where this read ended, kept with the version for the next read to go on from
            version = StreamVersion(f"{version.token}{POINT_SEPARATOR}{batch.resume}")
        # a read of the whole stream reported every bad record still in it again
        self._stage(batch, position, version, forget=batch.whole)
        with self.watch.time("pull.stage"):  # a first load's indexes, built at its end
            self.loading.close()
        self.progress.finish(self.stage, self.total.received)
        _log(self.source_name, self.stream, self.total)

    def _stage(
        self,
        batch: Batch,
        cursor: datetime | None = None,
        version: StreamVersion | None = None,
        forget: bool = False,
    ) -> None:
        with self.watch.time("pull.stage"):
            stats = self.store.stage_built(
                self.source_name,
                self.stream,
                batch.records,
                batch.issues,
                cursor=cursor,
                version=version,
                seen_at=self.begun,
                forget=forget,
            )
        self.total.add(stats)
        # changed after the run started: counted, so that what was read adds up; the next
        # run takes them
        self.total.received += batch.later
        self.total.later += batch.later
        self.shows.batch(len(batch.records), batch.position)


class _Shown:
    """A stream's bar: its count a batch at a time, and its total estimated from how far
    into its input the read got (a source that knows its size: ``Sized``)."""

    def __init__(self, progress: Progress, stage: str, size: int | None) -> None:
        self.progress, self.stage, self.size = progress, stage, size
        self.done = 0

    def batch(self, records: int, position: int | None) -> None:
        if records:
            self.done += records
            self.progress.advance(self.stage, records)
        if self.size and position and self.done:
            self.progress.estimate(self.stage, round(self.done * self.size / position))


def _newer(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(a, b) if a is not None and b is not None else (a or b)


def _log(source_name: str, stream: Stream, total: StageStats) -> None:
    log.info(
        "pulled %s.%s: %d received = %d staged + %d unchanged + %d quarantined + %d later"
        " (%d corrected)%s",
        source_name,
        stream.value,
        total.received,
        total.staged,
        total.unchanged,
        total.quarantined,
        total.later,
        total.corrected,
        f"; {total.forgotten} issues kept before no longer found: forgotten"
        if total.forgotten
        else "",
    )


def _kept(
    store: Store, source_name: str, stream: Stream, version: StreamVersion | None
) -> tuple[str | None, str | None]:
    """The version kept after the stream's last complete read that left nothing for later,
    and where that read ended (``Resumable``), or None for either."""
    if version is None or version.token is None:
        return None, None
    kept = store.source_version(source_name, stream.value)
    if kept is None:
        return None, None
    token, _, point = kept.partition(POINT_SEPARATOR)
    return token, point or None
