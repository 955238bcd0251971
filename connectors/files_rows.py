"""Raw rows out of export files, one at a time, with their line numbers.

A row that cannot even be split into columns (a malformed JSON line, a CSV row with the
wrong number of fields) comes out as a ``BadRow`` so the source can quarantine it and go
on; nothing here holds more than one row (or one order's adjacent rows) in memory.

A row keeps what it was read from and renders its text only when an issue quotes it:
almost every row is read without one, and decoding or joining each would cost more
than the csv module's own split.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
import xxhash

from crmsync.contract import Span

EXCERPT = 200
BLOCK = 2**16  # bytes a lines file is read (and hashed) at a time: a block stays in cache
# bytes hashed at a time of a start read again only to be hashed: few and large, since
# the read and the hashing each let go of the GIL and wait to take it back after, up to
# 5 ms while another thread runs Python (a run's consent read-back, its senders): beside
# one busy thread, 2.4 GB took 25 s in blocks of 1 MiB, 7.8 s of 4 MiB, 2.6 s of 32 MiB
PREFIX_BLOCK = 2**25
# characters of a CSV file read at a time on the plain path (``plain_csv``)
TEXT_BLOCK = 2**20
# bytes that make a CSV line other than its fields joined by the delimiter, as the csv
# module reads it: a quote (a field quoted, perhaps over several lines), a carriage return
# (a line break of its own), NUL (refused)
_NOT_PLAIN = (b'"', b"\r", b"\x00")
_ASCII = "".join(map(chr, range(128)))
_BOM = codecs.BOM_UTF8


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a setattr call per field
class Row:
    line: int  # 1-based line where the row starts
    values: dict[str, Any]
    written: bytes | str | list[str]  # a UTF-8 JSON line, decoded text, or CSV fields
    delimiter: str = ","  # joins CSV fields

    @property
    def text(self) -> str:
        """The row as written, for the operator's excerpt."""
        return _render(self.written, self.delimiter)


def _render(written: bytes | str | list[str], delimiter: str = ",") -> str:
    if isinstance(written, bytes):
        return written.decode("utf-8", errors="replace")
    if isinstance(written, str):
        return written
    return delimiter.join(written)


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str
    text: str


def excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def reading_encoding(encoding: str) -> str:
    """UTF-8 is read as utf-8-sig, so a byte-order mark never ends up in the first column."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def open_text(path: Path, encoding: str) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding=reading_encoding(encoding), newline="")
    return path.open(encoding=reading_encoding(encoding), newline="")


def byte_position(handle: IO[Any]) -> Callable[[], int]:
    """How many bytes of the file under ``handle`` were read so far (of a compressed
    file, compressed bytes: what its size counts), for progress; buffered, so a little
    ahead of the rows taken."""
    raw: Any = getattr(handle, "buffer", handle)  # a text handle's bytes underneath
    raw = getattr(raw, "fileobj", raw)  # a gzip file's compressed file
    return cast(Callable[[], int], raw.tell)


def open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def csv_header(handle: IO[str], delimiter: str) -> list[str]:
    first = next(csv.reader(handle, delimiter=delimiter), None)
    return [name.strip() for name in first] if first else []


CellTest = tuple[str, Callable[[str], bool]]  # a column, and whether its cell drops the row


def plain_csv(handle: IO[str], encoding: str) -> bool:
    """Whether each row of the CSV file under this text handle is one line and its fields
    are the line split at the delimiter, as the csv module reads it: an uncompressed file,
    in an encoding that writes ASCII as those bytes and no other character with them
    (UTF-8, a single-byte code page), that holds no quote, carriage return or NUL.
    Scanning for three bytes, in large blocks, costs a small part of what the csv module
    takes to split the rows. The file scanned is the one open, not the one at its path
    (another renamed over it meanwhile), read where it is without moving the handle
    (``os.pread``; where there is none, no file is called plain)."""
    binary = getattr(handle, "buffer", None)
    if not isinstance(binary, io.BufferedReader) or not hasattr(os, "pread"):
        return False  # a compressed file (its buffer decompresses), or no pread
    if not _ascii_bytes(encoding):
        return False
    descriptor, offset = binary.fileno(), 0
    while block := os.pread(descriptor, PREFIX_BLOCK, offset):
        if any(mark in block for mark in _NOT_PLAIN):
            return False
        offset += len(block)
    return True


@functools.cache
def _ascii_bytes(encoding: str) -> bool:
    """Whether ``encoding`` writes each ASCII character as its own byte and no other
    character with a byte below 128: UTF-8, or a single-byte encoding keeping ASCII."""
    name = codecs.lookup(encoding).name
    if name in ("utf-8", "utf-8-sig", "ascii"):
        return True
    every_byte = bytes(range(256)).decode(name, errors="replace")
    return len(every_byte) == 256 and every_byte[:128] == _ASCII


def csv_rows(
    handle: IO[str],
    delimiter: str,
    check_header: Callable[[list[str]], None] | None = None,
    drop: CellTest | None = None,
    plain: bool = False,
) -> Iterator[Row | BadRow]:
    """Rows as dicts keyed by the header; a row with a different field count is a BadRow.

    ``check_header`` sees the header before any row is read (and may raise). ``drop``
    (column, test): a well-sized row whose cell in that column passes the test is left
    out before its dict is made (the cell the dict would hold: a repeated column's last).
    ``plain``: the file is ``plain_csv``, and its rows after the header are split here
    rather than by the csv module (``_plain_rows``), when rows are dropped: an
    incremental read keeps about one row in a hundred, and the module's split of every
    row was most of its time.
    """
    reader = csv.reader(handle, delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    if check_header is not None:
        check_header(header)
    column = -1
    if drop is not None and drop[0] in header:
        column = len(header) - 1 - header[::-1].index(drop[0])
    dropped = drop[1] if drop is not None and column >= 0 else None
    start = reader.line_num + 1
    if plain and dropped is not None:
        yield from _plain_rows(handle, header, delimiter, (column, dropped), start)
        return
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield BadRow(start, f"unreadable CSV row: {exc}", "")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not fields or fields == [""]:
            continue  # blank line
        if len(fields) != len(header):
            yield _wrong_width(line, fields, header, delimiter)
            continue
        if dropped is not None and dropped(fields[column]):
            continue
        yield Row(line, dict(zip(header, fields, strict=True)), fields, delimiter)


def _wrong_width(line: int, fields: list[str], header: list[str], delimiter: str) -> BadRow:
    """The issue of a row with another number of fields than the header."""
    reason = f"the row has {len(fields)} fields but the header has {len(header)}"
    return BadRow(line, reason, delimiter.join(fields))


def _plain_rows(
    handle: IO[str], header: list[str], delimiter: str, drop: tuple[int, Callable[[str], bool]],
    line: int,
) -> Iterator[Row | BadRow]:  # fmt: skip
    """``csv_rows`` after the header, from line ``line``, for a ``plain_csv`` file: its
    text in large blocks, each line split at the delimiter, which is what the csv module
    makes of a line without quotes (a line over its field size limit too, refused as it
    refuses it). A row whose cell in ``drop``'s column passes its test is left out."""
    column, dropped = drop
    width, limit = len(header), csv.field_size_limit()
    carry = ""
    while True:
        block = handle.read(TEXT_BLOCK)
        lines = (carry + block).split("\n")
        carry = lines.pop() if block else ""
        for text in lines:
            number, line = line, line + 1
            if not text:
                continue  # blank line
            fields = text.split(delimiter)
            if len(text) > limit and max(map(len, fields)) > limit:
                reason = f"unreadable CSV row: field larger than field limit ({limit})"
                yield BadRow(number, reason, "")
            elif len(fields) != width:
                yield _wrong_width(number, fields, header, delimiter)
            elif not dropped(fields[column]):
                yield Row(number, dict(zip(header, fields, strict=True)), fields, delimiter)
        if not block:
            return


def jsonl_rows(
    handle: IO[bytes], encoding: str, drop: Callable[[dict[str, Any]], bool] | None = None
) -> Iterator[Row | BadRow]:
    """One JSON object per line; blank lines are skipped, anything else unparsable is a BadRow.

    ``drop`` sees each parsed object and leaves out those it passes, before a row is made.
    """
    return numbered_rows([(1, handle)], encoding, drop)


def numbered_rows(
    blocks: Iterable[tuple[int, Iterable[bytes]]],
    encoding: str,
    drop: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[Row | BadRow]:
    """``jsonl_rows`` of lines given a block at a time: (number of its first line, its
    lines), as ``HashedLines`` gives them (or a whole file, whose lines it iterates)."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for first, lines in blocks:
        for number, raw in enumerate(lines, start=first):
            data = (raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw).strip()
            if not data:
                continue
            # UTF-8 goes to orjson as bytes and is decoded only for an excerpt
            written: bytes | str = data if utf8 else data.decode(encoding, errors="replace")
            try:
                value = loads(written)
            except decode_error as exc:
                yield BadRow(number, f"malformed JSON: {exc}", _render(written))
                continue
            if type(value) is not dict:
                kind = type(value).__name__
                yield BadRow(number, f"expected a JSON object, got {kind}", _render(written))
                continue
            if drop is not None and drop(value):
                continue
            yield Row(number, value, written)


@dataclass(frozen=True, slots=True)
class Point:
    """How far a read of a lines file went: its first ``length`` bytes, ``lines`` whole
    lines, whose XXH3-128 is ``digest`` (``line_hasher``). A later read that finds the
    file still beginning with exactly those bytes has nothing new before ``length``."""

    length: int
    lines: int
    digest: str


class HashedLines:
    """A lines file's whole lines, numbered, read in large blocks and hashed as they go,
    from the start or, when the file still begins with a ``Point`` an earlier read
    reached (the same bytes: their hash is computed afresh and compared), from there.

    ``reached`` is the point this read got to once every line was taken; a last line
    with no line break is read but left out of it (it may still be being written), so the
    next read takes it again. ``resumed`` is where the lines began (0: the start).

    With a ``span`` (one part of a file that several readers read at once: ``Divisible``)
    only the span's lines are taken, numbered as in the whole file: the lines before it
    are counted first (and hashed too when the span runs to the file's end, whose
    ``reached`` is then the whole file's point; a span that ends before it reaches none,
    and hashes nothing). A span is a read from scratch: it takes no ``start``.

    ``proven``: the start was proved already (``files_start.StartProof``), the handle is
    past it, and this is the hasher holding its bytes.
    """

    def __init__(
        self,
        handle: IO[bytes],
        start: Point | None = None,
        span: Span | None = None,
        proven: Any | None = None,
    ) -> None:
        self.handle, self.start, self.span, self.proven = handle, start, span, proven
        self.resumed = 0
        self.reached: Point | None = None

    def __iter__(self) -> Iterator[tuple[int, list[bytes]]]:
        """(number of the first line, the lines) a block at a time."""
        handle, hasher = self.handle, line_hasher()
        number = 0  # lines before the next block's first
        length = 0  # bytes of whole lines hashed (or, in a span that ends early, taken)
        end = self.span.end if self.span is not None else None
        hashing = end is None
        if self.span is not None:
            if self.span.start:
                number = _lines_before(handle, self.span.start, hasher if hashing else None)
                length = self.span.start
        elif self.start is not None:
            if self.proven is not None or same_start(handle, self.start, hasher):
                hasher = hasher if self.proven is None else self.proven
                number, length = self.start.lines, self.start.length
                self.resumed = length
            else:
                handle.seek(0)
                hasher = line_hasher()
        carry = b""
        position = length  # bytes of the file read so far
        while block := handle.read(BLOCK if end is None else min(BLOCK, end - position)):
            position += len(block)
            data = carry + block if carry else block
            lines = data.split(b"\n")
            carry = lines.pop()  # what follows the last line break: a line's start, or b""
            if lines:
                cut = len(data) - len(carry)
                if hashing:
                    hasher.update(memoryview(data)[:cut])
                length += cut
                yield number + 1, lines
                number += len(lines)
        if carry:
            yield number + 1, [carry]
        if hashing:
            self.reached = Point(length, number, hasher.hexdigest())


def line_hasher() -> Any:
    """The hash of a lines file's whole lines, which a ``Point`` keeps: XXH3-128, not a
    cryptographic hash, since it tells a file's own earlier bytes from a changed start
    and guards against no adversary (a run's export is the operator's own). A resumed
    read hashes the whole start again: over a 2.4 GB orders export it took 2.3 s with
    SHA-256 and 0.4 s with this, on the same machine (cached, read included)."""
    return xxhash.xxh3_128()


def same_start(handle: IO[bytes], start: Point, hasher: Any) -> bool:
    """Reads the first ``start.length`` bytes into ``hasher``: whether they hash to
    ``start.digest`` (False: the file changed before that point, or is shorter)."""
    read = 0
    for buffer, filled in _prefix(handle, start.length):
        hasher.update(memoryview(buffer)[:filled])
        read += filled
    return read == start.length and bool(hasher.hexdigest() == start.digest)


def _lines_before(handle: IO[bytes], offset: int, hasher: Any | None) -> int:
    """The line breaks in the file's first ``offset`` bytes, read into ``hasher`` too
    when given; the handle is left at ``offset`` (or at the end of a shorter file)."""
    count = 0
    for buffer, filled in _prefix(handle, offset):
        count += buffer.count(b"\n", 0, filled)
        if hasher is not None:
            hasher.update(memoryview(buffer)[:filled])
    return count


def _prefix(handle: IO[bytes], length: int) -> Iterator[tuple[bytearray, int]]:
    """The handle's next ``length`` bytes (fewer at the file's end), a block at a time
    into one buffer used again for each: (the buffer, how much of it the block filled).
    A new block for each read (``handle.read``) costs the kernel a page fault per 4 KiB
    of it: reading and hashing a 2.4 GB file took 4.6 s that way, 1.7 s this way."""
    buffer = bytearray(min(PREFIX_BLOCK, length))  # a small file's start: a small buffer
    view = memoryview(buffer)
    readinto = cast(Any, handle).readinto  # every binary file has it; ``IO`` does not say
    remaining = length
    while remaining > 0:
        filled = readinto(view[: min(len(buffer), remaining)])
        if not filled:
            return
        yield buffer, filled
        remaining -= filled


def line_starts(handle: IO[bytes], size: int, parts: int) -> list[int]:
    """Where to cut a lines file of ``size`` bytes into at most ``parts`` parts of about
    as many bytes, each cut at the start of a line: the offsets after the first part's
    start (0), ascending, each past a line break (none in a file of one line)."""
    cuts: list[int] = []
    for part in range(1, parts):
        aim = size * part // parts
        if aim <= (cuts[-1] if cuts else 0):
            continue
        handle.seek(aim - 1)  # a line that starts at ``aim`` follows a break at aim - 1
        rest = handle.readline()
        if not rest.endswith(b"\n"):
            break  # no further line break: the last line runs past ``aim``
        cut = aim - 1 + len(rest)
        if cut >= size:
            break
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    return cuts


def adjacent_groups(rows: Iterator[Row | BadRow], id_column: str) -> Iterator[list[Row] | BadRow]:
    """Consecutive rows with the same value in ``id_column`` as one group (CSV order lines).

    Only neighbours are grouped, so memory holds one record's rows at a time; an export
    that scatters one order's rows makes several partial records of it.
    """
    group: list[Row] = []
    for row in rows:
        if isinstance(row, BadRow):
            yield row
            continue
        key = row.values.get(id_column)
        if group and (not key or key != group[0].values.get(id_column)):
            yield group
            group = []
        group.append(row)
    if group:
        yield group
