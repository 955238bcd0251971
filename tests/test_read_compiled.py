"""The generated record functions do exactly what running the steps one by one does.

``connectors.records.generate`` writes a stream's steps into one function; the reference
here is the loop it replaced (each step called in the layout's order, updated_at after
them, then the rows), run on every row of a dirty sample store and on rows broken field
by field, comparing the record, the notes and the error (its type, reason, field, row).
"""

from __future__ import annotations

import copy
import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.files_config import FilesSourceConfig
from connectors.records import Builder, MappingKeys, RowsSpec, compile_stream
from connectors.records.builder import UNSET, Rows
from connectors.records.context import MappingContext, RowError
from connectors.records.paths import compile_path, plain_key
from crmsync.errors import RecordError
from crmsync.records import Stream
from crmsync.sample import SampleSpec, write_files

Outcome = tuple[str, Any, list[tuple[str, str]]]


def reference_rows(rows: Rows, raw: Any, notes: list[Any], given: Sequence[Any] | None) -> Any:
    found = given if given is not None else rows.getter(raw)
    if found is None:
        return ()
    if not isinstance(found, list | tuple):
        raise RecordError("expected a list of rows", field=rows.label or "")
    built = []
    for index, item in enumerate(found):
        mark = len(notes)
        values = rows.template.copy()
        try:
            if not hasattr(item, "get"):
                raise RecordError(f"expected an object, got {type(item).__name__}")
            for position, step in rows.layout:
                values[position] = step(item, notes)
        except RecordError as exc:
            field = rows.name(index, exc.field)
            raise RowError(exc.reason, field=field, row=index, value=exc.value) from exc
        if len(notes) > mark and rows.label is not None:
            notes[mark:] = [(rows.name(index, f), change) for f, change in notes[mark:]]
        built.append(rows.kind(*values))
    return tuple(built)


def reference(builder: Builder, raw: Any, notes: list[Any], given: Any = None) -> Any:
    """Builder.build as it was before generation: a loop over the steps."""
    if not hasattr(raw, "get"):
        raise RecordError(f"expected an object, got {type(raw).__name__}")
    values = builder._template.copy()
    for position, step in builder._layout:
        values[position] = step(raw, notes)
    if builder._updated is not None:
        position, step = builder._updated
        values[position] = step(raw, notes)
    rows = builder._rows
    built = reference_rows(rows, raw, notes, given) if rows is not None else ()
    return builder._assemble(values, built)


def outcome(build: Callable[[list[Any]], Any]) -> Outcome:
    notes: list[Any] = []
    try:
        return "record", build(notes), notes
    except RecordError as exc:
        row = exc.row if isinstance(exc, RowError) else None
        return "error", (type(exc).__name__, exc.reason, exc.field, row), notes


def same(builder: Builder, raw: Any, given: Any = None) -> Outcome:
    expected = outcome(lambda notes: reference(builder, copy.deepcopy(raw), notes, given))
    actual = outcome(lambda notes: builder.build(copy.deepcopy(raw), notes, rows=given))
    assert actual == expected, raw
    return actual


def kinds(outcomes: list[Outcome]) -> set[str]:
    """What the comparisons covered: records, errors, and records with notes."""
    return {kind for kind, _, _ in outcomes} | {"notes" for _, _, notes in outcomes if notes}


BREAKAGES: tuple[Any, ...] = ("", None, "  ", "garbage", "-5", "1e999", [1], {"a": 1}, 0, True)


def broken(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The row with each field (and each line's field) replaced by each breakage in turn."""
    out = []
    for key in raw:
        for value in BREAKAGES:
            out.append({**raw, key: value})
    for index, line in enumerate(raw.get("line_items") or []):
        for key in line:
            for value in BREAKAGES[:5]:
                lines = copy.deepcopy(raw["line_items"])
                lines[index] = {**line, key: value}
                out.append({**raw, "line_items": lines})
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[Stream, Builder]]:
    base = tmp_path_factory.mktemp("compiled")
    write_files(SampleSpec(customers=400, dirty_rate=0.4, seed=12), base)
    config = FilesSourceConfig.model_validate(
        {
            "kind": "files",
            "customers": {"path": "customers.csv", "columns": {"region": "district"}},
            "orders": {"path": "orders.jsonl", "columns": {"placed_at": "created_at"}},
            "carts": {"path": "carts.jsonl", "columns": {"converted": "completed_at"}},
        }
    )
    builders = {
        stream: compile_stream(
            stream, spec.mapping(), spec.rows(), keys=spec.keys("s"), context=spec.context()
        )
        for stream, spec in config.files().items()
    }
    return base, builders


def test_customer_rows_and_their_breakages_build_alike(
    store: tuple[Path, dict[Stream, Builder]],
) -> None:
    base, builders = store
    with (base / "customers.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen = []
    for number, row in enumerate(rows):
        seen.append(same(builders[Stream.CUSTOMERS], row))
        if number % 40 == 0:
            seen += [same(builders[Stream.CUSTOMERS], variant) for variant in broken(row)]
    assert kinds(seen) == {"record", "error", "notes"}


@pytest.mark.parametrize("stream", [Stream.ORDERS, Stream.CARTS])
def test_json_rows_and_their_breakages_build_alike(
    store: tuple[Path, dict[Stream, Builder]], stream: Stream
) -> None:
    base, builders = store
    lines = (base / f"{stream}.jsonl").read_bytes().splitlines()
    seen = []
    for number, line in enumerate(lines):
        raw = orjson.loads(line)
        seen.append(same(builders[stream], raw))
        if number % 60 == 0:
            seen += [same(builders[stream], variant) for variant in broken(raw)]
    assert kinds(seen) >= {"record", "error"}
    same(builders[stream], ["not", "a", "row"])
    same(builders[stream], {"id": "1", "line_items": "not a list"})


def test_specs_with_defaults_maps_arithmetic_and_given_rows_build_alike() -> None:
    fields: dict[str, Any] = {
        "external_id": {"path": ["id", "number"]},
        "email": "billing.email",
        "customer_external_id": {"path": "buyer", "null_if": ["0"]},
        "placed_at": {"path": "at", "timezone": "UTC"},
        "updated_at": {"path": "changed", "format": "epoch_ms"},
        "status": {"path": "state", "map": {"OK": "paid", "X": "cancelled"}},
        "currency": {"default": "TRY"},
        "refunded_total": {"path": "refunds", "sum": "amount", "abs": True},
        "shipping": {"path": "ship", "default": "0"},
    }
    lines = RowsSpec(
        path="items",
        fields={
            "quantity": "q",
            "unit_price": {"path": "net", "plus": "d", "per": "q"},
            "discount": "d",
        },
    )
    builder = compile_stream(
        Stream.ORDERS, fields, lines, keys=MappingKeys.nested("x"), context=MappingContext()
    )
    raw = {
        "number": "7", "billing": {"email": "A@Example.com"}, "buyer": "0",
        "at": "2025-01-02 03:04",
        "changed": "1741064767000", "state": "OK", "refunds": [{"amount": "-2.5"}, {"amount": 1}],
        "items": [{"q": 2, "net": "18", "d": "1"}, {"q": "3", "net": "30", "d": "0"}],
    }  # fmt: skip
    seen = [same(builder, raw), *(same(builder, variant) for variant in broken(raw))]
    assert kinds(seen) >= {"record", "error"}
    given = [{"q": 1, "net": "5", "d": "0"}, {"q": 0, "net": "5", "d": "0"}]
    same(builder, raw, given)
    assert builder.build(raw, [], UNSET).external_id == "7"


@pytest.mark.parametrize(
    "path", ["a", "a.b", "a.0", "meta[key=x].value", "odd key", "x[y]", "[k=v]", "a..b", "é"]
)
@pytest.mark.parametrize("flat", [True, False])
def test_a_plain_key_is_read_as_compile_path_reads_it(path: str, flat: bool) -> None:
    key = plain_key(path, flat=flat)
    if key is None:
        return
    getter = compile_path(path, flat=flat)
    for row in ({path: 1, key: 2, "a": {"b": 3}}, {}, {"a": [4]}):
        assert row.get(key) == getter(row)
