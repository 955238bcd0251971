"""``crmsync check`` for the files source: is each file there, readable, and shaped as mapped?

A missing column is named together with the config key to change, since that is the one
thing the operator needs to know.
"""

from __future__ import annotations

from pathlib import Path

from connectors.files_config import LinedFile, StreamFile
from connectors.files_rows import BadRow, csv_header, jsonl_rows, open_binary, open_text
from connectors.records import FieldSpec
from connectors.records.paths import compile_path
from crmsync.contract import Check
from crmsync.records import Stream


def _columns(table: str, mapping: dict[str, FieldSpec]) -> list[tuple[str, str]]:
    return [
        (f"{table}.{name}", column)
        for name, spec in mapping.items()
        for column in dict.fromkeys(spec.referenced())
    ]


def mapped_columns(spec: StreamFile) -> list[tuple[str, str]]:
    """(config key relative to the stream, column) for every column the source looks up:
    each path of a field spec, and those its arithmetic reads (``per``, ``minus``...)."""
    found = _columns("columns", spec.mapping())
    if isinstance(spec, LinedFile) and spec.rows() is not None:
        found += _columns("line_columns", spec.line_mapping())
    if spec.updated_at:
        found.append(("updated_at", spec.updated_at))
    return found


def lookup(record: dict[str, object], path: str) -> object:
    return compile_path(path)(record)


def check_file(stream: Stream, spec: StreamFile, path: Path, key: str) -> Check:
    what = f"{stream} file {path}"
    if not path.is_file():
        return Check(what, False, f"not found; set {key}.path (relative to the config file)")
    try:
        if spec.file_format() == "csv":
            return _check_csv(what, spec, path, key)
        return _check_jsonl(what, spec, path, key)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        return Check(what, False, f"cannot read it: {exc} (check {key}.encoding and permissions)")


def _check_csv(what: str, spec: StreamFile, path: Path, key: str) -> Check:
    with open_text(path, spec.encoding) as handle:
        header = csv_header(handle, spec.delimiter)
    if not header:
        return Check(what, False, "the file is empty; a header row is expected")
    missing = [(k, column) for k, column in mapped_columns(spec) if column not in header]
    if missing:
        detail = "; ".join(
            f"column {column!r} is not in the header (change {key}.{k})" for k, column in missing
        )
        return Check(what, False, f"{detail}. The header has: {', '.join(header)}")
    return Check(what, True, f"{len(header)} columns, all mapped columns present")


def _check_jsonl(what: str, spec: StreamFile, path: Path, key: str) -> Check:
    with open_binary(path) as handle:  # read as the source reads it, in its encoding
        first = next(jsonl_rows(handle, spec.encoding), None)
    if first is None:
        return Check(what, True, "the file is empty")
    if isinstance(first, BadRow):
        return Check(what, False, f"line {first.line} is not usable: {first.reason}")
    record = first.values
    id_column = spec.id_column()
    if lookup(record, id_column) is None:
        return Check(
            what, False, f"the first record has no {id_column!r}; change {key}.columns.external_id"
        )
    absent = [column for _, column in mapped_columns(spec) if _absent(record, column, spec)]
    if absent:
        return Check(
            what, True, f"the first record lacks {', '.join(absent)} (read as empty; "
            f"remap under {key}.columns if the file names them differently)",
        )  # fmt: skip
    return Check(what, True, "all mapped keys present in the first record")


def _absent(record: dict[str, object], column: str, spec: StreamFile) -> bool:
    if isinstance(spec, LinedFile) and column in _line_columns(spec):
        lines = lookup(record, spec.lines)
        if isinstance(lines, list) and lines and isinstance(lines[0], dict):
            return column not in lines[0]
        return False
    if column in record:
        return False
    return lookup(record, column) is None


def _line_columns(spec: LinedFile) -> set[str]:
    return {column for _, column in _columns("line_columns", spec.line_mapping())}
