"""Raw rows out of export files, one at a time, with their line numbers.

A row that cannot even be split into columns (a malformed JSON line, a CSV row with the
wrong number of fields) comes out as a ``BadRow`` so the source can quarantine it and go
on; nothing here holds more than one row (or one order's adjacent rows) in memory.
"""

from __future__ import annotations

import codecs
import csv
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson

EXCERPT = 200
_BOM = codecs.BOM_UTF8


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # 1-based line where the row starts
    values: dict[str, Any]
    text: str  # the row as written, for the operator's excerpt


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


def open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def csv_header(handle: IO[str], delimiter: str) -> list[str]:
    first = next(csv.reader(handle, delimiter=delimiter), None)
    return [name.strip() for name in first] if first else []


def csv_rows(
    handle: IO[str], delimiter: str, check_header: Callable[[list[str]], None] | None = None
) -> Iterator[Row | BadRow]:
    """Rows as dicts keyed by the header; a row with a different field count is a BadRow.

    ``check_header`` sees the header before any row is read (and may raise).
    """
    reader = csv.reader(handle, delimiter=delimiter)
    header = [name.strip() for name in next(reader, [])]
    if check_header is not None:
        check_header(header)
    start = reader.line_num + 1
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
        text = delimiter.join(fields)
        if len(fields) != len(header):
            reason = f"the row has {len(fields)} fields but the header has {len(header)}"
            yield BadRow(line, reason, text)
            continue
        yield Row(line, dict(zip(header, fields, strict=True)), text)


def jsonl_rows(handle: IO[bytes], encoding: str) -> Iterator[Row | BadRow]:
    """One JSON object per line; blank lines are skipped, anything else unparsable is a BadRow."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    for number, raw in enumerate(handle, start=1):
        data = (raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw).strip()
        if not data:
            continue
        text = data.decode("utf-8" if utf8 else encoding, errors="replace")
        try:
            value = orjson.loads(data if utf8 else text)
        except orjson.JSONDecodeError as exc:
            yield BadRow(number, f"malformed JSON: {exc}", text)
            continue
        if not isinstance(value, dict):
            yield BadRow(number, f"expected a JSON object, got {type(value).__name__}", text)
            continue
        yield Row(number, value, text)


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
