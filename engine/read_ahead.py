"""Reading a source into staging rows, in the run's process or ahead of it in children.

Reading a stream (parsing, normalising, validating) and building its staging rows
(``state.stage_rows``: content, hash, lines) is CPU work in Python, and so is much of
staging them. On one interpreter the two take turns under the GIL; a first sync of a
large export spent as long reading as staging. So a large read runs in child processes
(``crmsync.child``) beside the run's process, which stages what they have built: a first
sync's pull then takes about as long as its largest part, not the sum of them.

The streams are shared out among a few readers (``lanes``: one per CPU, each with about
as many bytes to read), which all start at once and each read their streams in order.
A stream larger than one reader's share is cut into parts first when its source can
read it so (``Divisible``, ``divided``): a store's orders export, most of its bytes,
would otherwise keep one reader busy long after the others are done.
The run stages the customers first (the orders and carts they own then find their
person at once), then the other streams' batches in the order they are built, from
whichever reader has one (``Reader.arriving``): taken stream after stream, the batches
of the reader whose streams come last waited until the others were done, and the run
staged them alone at the end with one core idle (6 to 8 s of a 23 s pull at 100,000
customers). A reader whose streams come later must not wait for the run to take its
first batch either: each reader spools what it builds to files of its own (``Spool``,
in segments deleted once the run has staged them) and sends the run only where each
batch lies. The run reads a batch back when it stages it. Memory stays at a few batches
in every process; what the readers are ahead of the run waits on disk (in the page
cache, mostly).

Each child builds the same source from its recipe (the connector class, its validated
configuration and context: all picklable), and reads only: it never opens the state
database. What a child raises is raised in the run's process.

A read goes ahead only where that pays (``worth_reading_ahead``): a source that knows
its size (``Sized``) and is large, read from scratch (a first sync, a full or backfill
run: then nearly every record read is staged, and staging costs as much as reading).
An incremental read stages little, and starting an interpreter would cost more than it
saves; sources that cannot tell their size (REST, SQL) mostly wait on their server.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, cast

from crmsync import child
from crmsync.child import Pipes
from crmsync.contract import (
    ConnectorContext,
    Divisible,
    Exhaustive,
    Resumable,
    Sized,
    Source,
    Span,
)
from crmsync.cpus import usable_cpus
from crmsync.records import RecordIssue, Stream
from crmsync.spool import Note, SpoolReader, SpoolWriter, is_note
from state.stage_rows import BUILDERS, Built

AHEAD_BYTES = 16 * 2**20  # a read smaller than this stays in the run's process


@dataclass(frozen=True)
class SourceRecipe:
    """How to build a source again in another process (all picklable)."""

    cls: Any  # the connector class
    config: Any  # its validated configuration
    context: ConnectorContext

    def build(self) -> Source:
        return cast(Source, self.cls(self.config, self.context))


@dataclass(frozen=True)
class Read:
    """One stream to read: records changed after ``since`` (None: all), from ``resume``
    when the source can go on from there (``Resumable``; None: from the start)."""

    stream: Stream
    since: datetime | None
    resume: str | None = None
    span: Span | None = None  # one part of the stream's input, read beside the others


@dataclass
class Batch:
    """Built records of one stream and the issues found among them, in reading order."""

    records: list[Built] = field(default_factory=list)
    issues: list[RecordIssue] = field(default_factory=list)
    later: int = 0  # records changed after the run began: left for the next run
    newest: datetime | None = None  # the newest ``updated_at`` among ``records``
    # how far the read got, of the source's size (``Sized``): bytes of its input read so
    # far (by all its parts, for a divided read: ``PartsRead``)
    position: int | None = None
    resume: str | None = None  # the stream's last batch: where its read ended (``Resumable``)
    whole: bool = False  # the stream's last batch: its read went through all of it


def batches(source: Source, name: str, read: Read, until: datetime, size: int) -> Iterator[Batch]:
    """The stream's records as built batches of about ``size`` items, the last one
    possibly empty (so that there always is one)."""
    build = BUILDERS[read.stream]
    sized = source if isinstance(source, Sized) else None
    resumable = source if isinstance(source, Resumable) else None
    if resumable is not None:
        resumable.resume_from(read.stream, read.resume)
    if isinstance(source, Divisible):
        source.read_span(read.stream, read.span)
    batch = Batch()
    for item in source.read(read.stream, read.since, until):
        if isinstance(item, RecordIssue):
            batch.issues.append(item)
        elif item.updated_at is not None and item.updated_at > until:
            batch.later += 1
            continue
        else:
            batch.records.append(build(name, item))
            if item.updated_at is not None and (
                batch.newest is None or item.updated_at > batch.newest
            ):
                batch.newest = item.updated_at
        if len(batch.records) + len(batch.issues) >= size:
            if sized is not None:
                batch.position = sized.position(read.stream)
            yield batch
            batch = Batch()
    if resumable is not None:
        batch.resume = resumable.resume_point(read.stream)
    if isinstance(source, Exhaustive):
        batch.whole = source.read_whole(read.stream)
    else:
        batch.whole = read.since is None and read.resume is None
    yield batch


def worth_reading_ahead(source: Source, reads: Sequence[Read], full: bool) -> bool:
    """Whether the reads are large enough, and read from scratch, to run in a child."""
    if not isinstance(source, Sized) or not child.can_start():
        return False
    fresh = [r for r in reads if full or r.since is None]
    return bool(fresh) and sum(source.size(r.stream) or 0 for r in fresh) >= AHEAD_BYTES


class Reader:
    """Gives the batches of reads (``arriving``); ``seconds`` is the time spent reading and
    building them, wherever that ran."""

    seconds: float = 0.0

    def arriving(self, reads: Sequence[Read]) -> Iterator[tuple[Read, Batch, bool]]:
        """Every batch of ``reads`` as ``(read, batch, last)``, each read's in its order and
        its last one (``last``) after all its others; the reads' batches may come mixed,
        as they are built."""
        raise NotImplementedError


class InProcess(Reader):
    """Reads in the run's process, one read after another."""

    def __init__(self, source: Source, name: str, until: datetime, size: int) -> None:
        self.source, self.name, self.until, self.size = source, name, until, size

    def arriving(self, reads: Sequence[Read]) -> Iterator[tuple[Read, Batch, bool]]:
        for read in reads:
            reading = batches(self.source, self.name, read, self.until, self.size)
            held: Batch | None = None
            while True:
                started = time.perf_counter()
                batch = next(reading, None)
                self.seconds += time.perf_counter() - started
                if batch is None:
                    break
                if held is not None:
                    yield read, held, False
                held = batch
            assert held is not None, "a read gives at least one batch"
            yield read, held, True


@dataclass
class Lane:
    """One reader process, the reads it was given (those still to take first), and the
    spool its batches come through."""

    process: child.Child
    reads: list[Read]
    spool: SpoolReader


class PartsRead:
    """How much of one divided read's input its parts have read: the bytes from each
    part's start to where its latest batch ended, summed. Its parts' batches come mixed,
    so one batch's place in the input says nothing of how much of the whole was read."""

    def __init__(self) -> None:
        self._bytes: dict[Read, int] = {}

    def add(self, part: Read, batch: Batch) -> None:
        """``part``'s latest batch, which tells where in the input it ended."""
        if batch.position is not None and part.span is not None:
            self._bytes[part] = batch.position - part.span.start

    def shown(self, batch: Batch) -> Batch:
        """``batch``, telling the bytes every part has read so far (None: unknown)."""
        batch.position = sum(self._bytes.values()) if self._bytes else None
        return batch


def _shown(progress: PartsRead | None, batch: Batch) -> Batch:
    """``batch`` as the run sees it: for a divided read, telling what all parts read."""
    return batch if progress is None else progress.shown(batch)


class Ahead(Reader):
    """The reads done by child processes, which all start on their reads at once; a read
    divided into parts (``divided``) is read by several of them."""

    def __init__(self, lanes: Sequence[Lane], parts: Mapping[Read, Sequence[Read]]) -> None:
        self.lanes = list(lanes)
        self._parts = parts

    def arriving(self, reads: Sequence[Read]) -> Iterator[tuple[Read, Batch, bool]]:
        """The batches of ``reads`` from whichever reader has one built first. A read cut
        into parts gives its parts' batches mixed too; its last batch is its last part's
        (where the read ended: its ``resume``), held until every other part has ended. A
        part's batch tells how far into the input its part got; such a read's batches
        tell how much of its input all its parts have read (``Batch.position``)."""
        parts = {read: self._parts.get(read, (read,)) for read in reads}
        read_of = {part: read for read, its in parts.items() for part in its}
        parts_left = {read: len(its) for read, its in parts.items()}
        held: dict[Read, Batch] = {}  # each read's latest batch of its last part
        gone = {read: PartsRead() for read, its in parts.items() if len(its) > 1}
        while parts_left:
            lanes = [lane for lane in self.lanes if lane.reads and lane.reads[0] in read_of]
            assert lanes, "every read left is at the head of a reader's reads"
            ready = set(wait([lane.process.results for lane in lanes]))
            for lane in (lane for lane in lanes if lane.process.results in ready):
                part = lane.reads[0]
                read = read_of[part]
                batch = self._next(lane)
                progress = gone.get(read)
                if batch is not None and progress is not None:
                    progress.add(part, batch)
                last_part = part == parts[read][-1]
                if batch is not None and not last_part:
                    yield read, _shown(progress, batch), False
                elif batch is not None:
                    before = held.pop(read, None)
                    held[read] = batch
                    if before is not None:
                        yield read, _shown(progress, before), False
                else:  # the part ended
                    lane.reads.pop(0)
                    del read_of[part]
                    parts_left[read] -= 1
                    if not parts_left[read]:
                        del parts_left[read]
                        yield read, _shown(progress, held.pop(read)), True

    def _next(self, lane: Lane) -> Batch | None:
        """The lane's next batch of its current read; None once that read has ended."""
        message = cast(tuple[Any, ...], lane.process.receive())
        if is_note(message):
            message = cast(tuple[Any, ...], lane.spool.take(cast(Note, message)))
        if message[0] == "batch":
            return _unpacked(message)
        if message[0] != "end":
            child.raise_reported(message, "a reader process of the source")
        self.seconds += message[1]
        return None


def lanes(reads: Sequence[Read], sizes: Sequence[int], count: int) -> list[list[Read]]:
    """The reads shared among at most ``count`` readers with about as many bytes each
    (the largest first, each to the reader with the fewest so far), each reader's reads
    in their planned order."""
    loads = [0] * max(count, 1)
    shares: list[list[int]] = [[] for _ in loads]
    for index in sorted(range(len(reads)), key=lambda i: -sizes[i]):
        least = loads.index(min(loads))
        loads[least] += sizes[index]
        shares[least].append(index)
    return [[reads[i] for i in sorted(share)] for share in shares if share]


def divided(
    source: Source, reads: Sequence[Read], sizes: Sequence[int], count: int
) -> tuple[list[Read], list[int], dict[Read, list[Read]]]:
    """The reads and their sizes with each read larger than one reader's share cut into
    parts (a ``Divisible`` source's reads from scratch), the parts in the read's place;
    and each cut read's parts. One large export then keeps every reader busy instead
    of one: a store's orders file is most of its bytes."""
    if not isinstance(source, Divisible) or count < 2 or not sum(sizes):
        return list(reads), list(sizes), {}
    share = sum(sizes) / count
    found: list[tuple[Read, int]] = []
    parts: dict[Read, list[Read]] = {}
    for read, size in zip(reads, sizes, strict=True):
        wanted = min(count, math.ceil(size / share))
        spans = source.divide(read.stream, wanted) if wanted > 1 and read.resume is None else []
        if len(spans) < 2:
            found.append((read, size))
            continue
        parts[read] = [replace(read, span=span) for span in spans]
        found += [
            (part, (span.end if span.end is not None else size) - span.start)
            for part, span in zip(parts[read], spans, strict=True)
        ]
    return [read for read, _ in found], [size for _, size in found], parts


def reader_count() -> int:
    """Readers to share a read among: one per CPU."""
    return usable_cpus()


@contextmanager
def reader(
    source: Source,
    name: str,
    reads: Sequence[Read],
    until: datetime,
    size: int,
    recipe: SourceRecipe | None,
) -> Iterator[Reader]:
    """A reader for ``reads``: child processes when a recipe is given, else this one.
    Read here, the reads are read one after another, and a ``Resumable`` source has
    every resume point before the first read: it may prove a later stream's start
    beside the reads before it."""
    if recipe is None:
        if isinstance(source, Resumable):
            for read in reads:
                if read.resume is not None:
                    source.resume_from(read.stream, read.resume)
        yield InProcess(source, name, until, size)
        return
    sizes = [(source.size(r.stream) or 0) if isinstance(source, Sized) else 0 for r in reads]
    count = reader_count()
    reads, sizes, parts = divided(source, reads, sizes, count)
    directory = Path(tempfile.mkdtemp(prefix="crmsync-read-"))
    started: list[Lane] = []
    try:
        for number, share in enumerate(lanes(reads, sizes, count), start=1):
            process = child.start(
                f"reader {number} of source {name!r}", "engine.read_ahead:reader_main"
            )
            started.append(Lane(process, list(share), SpoolReader(directory)))
            process.send((recipe, name, until, size, str(directory), f"reader{number}"))
            for read in share:
                process.send(read)
            process.send(None)
        yield Ahead(started, parts)
    finally:
        for lane in started:
            lane.process.stop()
            lane.spool.close()
        shutil.rmtree(directory, ignore_errors=True)


def reader_main(task_fd: str, result_fd: str, parent: str) -> None:
    """The child's whole life: the reads it is sent, in order, then it ends."""
    child.serve(task_fd, result_fd, parent, _read_all)


def _read_all(pipes: Pipes) -> None:
    task = cast(tuple[SourceRecipe, str, datetime, int, str, str], pipes.tasks.recv())
    recipe, name, until, size, directory, writer_name = task
    source = recipe.build()
    spool = SpoolWriter(Path(directory), writer_name, pipes.check_parent)
    try:
        while (read := pipes.tasks.recv()) is not None:
            assert isinstance(read, Read)
            spent = 0.0
            started = time.perf_counter()
            for batch in batches(source, name, read, until, size):
                spent += time.perf_counter() - started
                pipes.check_parent()
                pipes.results.send(spool.put(_packed(batch)))
                started = time.perf_counter()
            pipes.results.send(("end", spent))
    finally:
        spool.close()
        source.close()


# A batch crosses to the run with its records as plain tuples: pickle writes a named tuple
# through its class, a Python call per record each way (measured per 20,000 orders: 210
# against 79 ms to write, 118 against 92 ms to read and make them named tuples again).


def _packed(batch: Batch) -> tuple[Any, ...]:
    records = [tuple(built) for built in batch.records]
    found = (batch.issues, batch.later, batch.newest, batch.position, batch.resume, batch.whole)
    return ("batch", records, *found)


def _unpacked(message: tuple[Any, ...]) -> Batch:
    _, records, issues, later, newest, position, resume, whole = message
    built = list(map(Built._make, records))
    return Batch(built, issues, later, newest, position, resume, whole)
