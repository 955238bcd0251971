"""Reading a source into staging rows, in the run's process or ahead of it in a child.

Reading a stream (parsing, normalising, validating) and building its staging rows
(``state.stage_rows``: content, hash, lines) is CPU work in Python, and so is much of
staging them. On one interpreter the two take turns under the GIL; a first sync of a
large export spent as long reading as staging. So a large read runs in a child process
(``crmsync.child``) that reads every stream the pull asks for, in order, and sends built
batches while the run's process stages the batches before: a first sync's pull then takes
about as long as the larger of the two, not their sum.

The child builds the same source from its recipe (the connector class, its validated
configuration and context: all picklable), and reads only: it never opens the state
database. The pipe holds a bounded number of bytes, so a child that gets ahead waits, and
memory stays at a few batches. What the child raises is raised in the run's process.

A read goes ahead only where that pays (``worth_reading_ahead``): a source that knows
its size (``Sized``) and is large, read from scratch (a first sync, a full or backfill
run: then nearly every record read is staged, and staging costs as much as reading).
An incremental read stages little, and starting an interpreter would cost more than it
saves; sources that cannot tell their size (REST, SQL) mostly wait on their server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from crmsync import child
from crmsync.child import Pipes
from crmsync.contract import ConnectorContext, Sized, Source
from crmsync.records import RecordIssue, Stream
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
    """One stream to read: records changed after ``since`` (None: all)."""

    stream: Stream
    since: datetime | None


@dataclass
class Batch:
    """Built records of one stream and the issues found among them, in reading order."""

    records: list[Built] = field(default_factory=list)
    issues: list[RecordIssue] = field(default_factory=list)
    later: int = 0  # records changed after the run began: left for the next run
    newest: datetime | None = None  # the newest ``updated_at`` among ``records``


def batches(source: Source, name: str, read: Read, until: datetime, size: int) -> Iterator[Batch]:
    """The stream's records as built batches of about ``size`` items, the last one
    possibly empty (so that there always is one)."""
    build = BUILDERS[read.stream]
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
            yield batch
            batch = Batch()
    yield batch


def worth_reading_ahead(source: Source, reads: Sequence[Read], full: bool) -> bool:
    """Whether the reads are large enough, and read from scratch, to run in a child."""
    if not isinstance(source, Sized) or not child.can_start():
        return False
    fresh = [r for r in reads if full or r.since is None]
    return bool(fresh) and sum(source.size(r.stream) or 0 for r in fresh) >= AHEAD_BYTES


class Reader:
    """Gives each stream's batches in the order the reads were planned; ``seconds`` is
    the time spent reading and building them, wherever that ran."""

    seconds: float = 0.0

    def batches(self, read: Read) -> Iterator[Batch]:
        raise NotImplementedError


class InProcess(Reader):
    def __init__(self, source: Source, name: str, until: datetime, size: int) -> None:
        self.source, self.name, self.until, self.size = source, name, until, size

    def batches(self, read: Read) -> Iterator[Batch]:
        reading = batches(self.source, self.name, read, self.until, self.size)
        while True:
            started = time.perf_counter()
            batch = next(reading, None)
            self.seconds += time.perf_counter() - started
            if batch is None:
                return
            yield batch


class Ahead(Reader):
    """The reads done by a child process, which starts on all of them at once."""

    def __init__(self, reader: child.Child, reads: Sequence[Read]) -> None:
        self.reader = reader
        self.planned = list(reads)

    def batches(self, read: Read) -> Iterator[Batch]:
        assert self.planned and self.planned[0] == read, "reads are taken in planned order"
        self.planned.pop(0)
        while True:
            message = cast(tuple[Any, ...], self.reader.receive())
            if message[0] == "batch":
                yield message[1]
            elif message[0] == "end":
                self.seconds += message[1]
                return
            else:
                child.raise_reported(message, "the source's reader process")


@contextmanager
def reader(
    source: Source,
    name: str,
    reads: Sequence[Read],
    until: datetime,
    size: int,
    recipe: SourceRecipe | None,
) -> Iterator[Reader]:
    """A reader for ``reads``: a child process when a recipe is given, else this one."""
    if recipe is None:
        yield InProcess(source, name, until, size)
        return
    process = child.start(f"the reader of source {name!r}", "crmsync.read_ahead:reader_main")
    try:
        process.send((recipe, name, until, size))
        for read in reads:
            process.send(read)
        process.send(None)
        yield Ahead(process, reads)
    finally:
        process.stop()


def reader_main(task_fd: str, result_fd: str, parent: str) -> None:
    """The child's whole life: the reads it is sent, in order, then it ends."""
    child.serve(task_fd, result_fd, parent, _read_all)


def _read_all(pipes: Pipes) -> None:
    recipe, name, until, size = cast(tuple[SourceRecipe, str, datetime, int], pipes.tasks.recv())
    source = recipe.build()
    try:
        while (read := pipes.tasks.recv()) is not None:
            assert isinstance(read, Read)
            spent = 0.0
            started = time.perf_counter()
            for batch in batches(source, name, read, until, size):
                spent += time.perf_counter() - started
                pipes.check_parent()
                pipes.results.send(("batch", batch))
                started = time.perf_counter()
            pipes.results.send(("end", spent))
    finally:
        source.close()
