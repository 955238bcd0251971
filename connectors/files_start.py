"""Proving a lines file's start in a thread of its own, beside the reads before its own.

A file that has only grown since its last read is read from where that read ended, once
its start is proved the same: its bytes up to there hashed again (``Point``). Over a
large orders export that is most of an incremental run's reading (240 MB at 100,000
customers, 2.4 GB at a million), and it needs nothing the reads before it do. Given the
point early (``Resumable``: the pull gives every point before it reads a stream), the
files source proves it here while it reads its other streams: reading and hashing let
go of the GIL, so the proof runs on another core beside the customers' CSV.

The proof keeps the handle it read the start from and the hasher holding it, and the
read goes on with both: the bytes read after the start are of the very file proved,
whatever was renamed over its path in between.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Any

from connectors.files_rows import Point, line_hasher, open_binary, same_start


class StartProof:
    """Whether the lines file at ``path`` still begins with ``start``'s bytes, found in a
    thread of its own (``take`` waits for it)."""

    def __init__(self, path: Path, start: Point) -> None:
        self.path, self.start = path, start
        self._proved: tuple[IO[bytes], Any] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._prove, name="crmsync-start-proof")
        self._thread.daemon = True  # a run stopped outright does not wait for it
        self._thread.start()

    def _prove(self) -> None:
        try:
            handle = open_binary(self.path)
        except BaseException as exc:  # raised by ``take``, in the read's thread
            self._error = exc
            return
        try:
            hasher = line_hasher()
            if same_start(handle, self.start, hasher):
                self._proved = (handle, hasher)
                return
        except BaseException as exc:
            self._error = exc
        handle.close()

    def take(self) -> tuple[IO[bytes], Any] | None:
        """The open handle, just past the start, and the hasher holding the start; None
        when the file no longer begins so (or is shorter). The caller closes the handle.
        Raises what opening or reading the file raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        proved, self._proved = self._proved, None
        return proved

    def close(self) -> None:
        """Lets go of a proof never taken (its read did not happen)."""
        self._thread.join()
        if self._proved is not None:
            self._proved[0].close()
            self._proved = None
