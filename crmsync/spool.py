"""Messages from one process to another through files, so that the writer never waits.

A pipe holds a few kilobytes: a child whose messages its parent takes only later (a
reader of the orders, while the run still stages the customers) would stop at once. A
spool writes each message, pickled, to a segment file in a directory both processes know
and sends only a note of where it lies (``Note``) through the pipe; the reader reads it
back when it wants it. Segments hold about ``SEGMENT_BYTES`` each and the reader deletes
each one once it has read past it, so the disk holds about what the writer is ahead; a
writer that is ``SEGMENTS_AHEAD`` segments ahead waits for the reader before it starts
another, so that stays bounded too (the temporary directory may be in memory).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

SEGMENT_BYTES = 64 * 2**20
SEGMENTS_AHEAD = 8  # segments a writer keeps on disk at most: 512 MB
WAIT = 0.05  # seconds between looks at whether the reader has taken a segment
SPOOLED = "spooled"

Note = tuple[str, str, int, int]  # (SPOOLED, segment file name, offset, length)


class SpoolWriter:
    """Writes messages to segment files named ``{name}-{number}`` in ``directory``;
    ``waiting`` is called while it waits for the reader (it may raise to stop)."""

    def __init__(
        self, directory: Path, name: str, waiting: Callable[[], None] = lambda: None
    ) -> None:
        self.directory, self.name, self._waiting = directory, name, waiting
        self._number = 0
        self._oldest = 1  # the oldest segment the reader may not have deleted yet
        self._file: BinaryIO | None = None
        self._segment = ""
        self._at = 0  # bytes written to the segment so far

    def put(self, message: object) -> Note:
        """Writes ``message`` (whole, and flushed to the file) and returns its note."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if self._file is None or self._at >= SEGMENT_BYTES:
            self._next_segment()
        assert self._file is not None
        offset = self._at
        self._file.write(data)
        self._file.flush()
        self._at += len(data)
        return (SPOOLED, self._segment, offset, len(data))

    def _next_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        while self._number - self._oldest + 1 >= SEGMENTS_AHEAD:
            if not (self.directory / f"{self.name}-{self._oldest}").exists():
                self._oldest += 1  # read and deleted
                continue
            self._waiting()
            time.sleep(WAIT)
        self._number += 1
        self._segment = f"{self.name}-{self._number}"
        self._file = open(self.directory / self._segment, "wb")  # noqa: SIM115 (kept open)
        self._at = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SpoolReader:
    """Reads the messages of a ``SpoolWriter`` back, in the order of their notes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: BinaryIO | None = None
        self._segment = ""

    def take(self, note: Note) -> object:
        _, segment, offset, length = note
        if segment != self._segment:
            self._drop()  # the writer has moved on: what is left there was read
            self._file = open(self.directory / segment, "rb")  # noqa: SIM115 (kept open)
            self._segment = segment
        assert self._file is not None
        self._file.seek(offset)
        data = self._file.read(length)
        if len(data) != length:
            raise EOFError(f"spool segment {segment} ends before its message at {offset}")
        return pickle.loads(data)

    def _drop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            os.unlink(self.directory / self._segment)

    def close(self) -> None:
        self._drop()


def is_note(message: object) -> bool:
    return isinstance(message, tuple) and len(message) == 4 and message[0] == SPOOLED
