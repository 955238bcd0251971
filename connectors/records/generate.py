"""A stream's steps written into one function per record, and one per row of a record.

``Builder.build`` runs for every row of every export, so instead of a loop over step
closures (each a read, an empty test and a conversion behind two or three calls) the
steps are written out as straight-line code, as ``dataclasses`` writes ``__init__`` and
``mappings.compose`` writes a mapping: a plain key is an inline ``get``, the empty test
is inline, and only the conversion is a call. The code does exactly what the steps do,
in the same order (the order of the mapping, then ``updated_at``, then the rows), so the
first failing field, the notes and their order are the same; ``tests/test_read_compiled``
holds it to the steps over the sample store and the dirty one.

The text written here holds nothing from the configuration but keys and labels passed
as bound values or written as ``repr`` literals, so any column name is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from connectors.records.steps import Step
from crmsync.errors import RecordError

# (raw, notes, updated or UNSET, the record's rows or None) -> record
RecordFunction = Callable[[Any, Any, Any, Any], Any]
RowFunction = Callable[[Any, Any], Any]  # (row, notes) -> OrderLine | CartItem
_LITERALS = (None, True, False)


class _Writer:
    """Collects the lines of one function and the values it needs bound."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bound: dict[str, Any] = {"RecordError": RecordError}

    def bind(self, name: str, value: Any) -> str:
        self.bound[name] = value
        return name

    def constant(self, name: str, value: Any) -> str:
        if any(value is literal for literal in _LITERALS):
            return repr(value)
        return self.bind(name, value)

    def step(self, index: int, step: Step, target: str, indent: str, row: str) -> None:
        """The lines that set ``target`` the way ``step(row, notes)`` returns it."""
        at = f"_{index}"
        out = self.lines.append
        if step.key is not None:
            out(f"{indent}v = get({step.key!r})")
        else:
            out(f"{indent}v = {self.bind('read' + at, step.read)}({row})")
        convert = f"{self.bind('convert' + at, step.convert)}(v, notes)"
        label = self.bind("label" + at, step.label)
        out(f'{indent}if v is None or v == "":')
        if step.mode == "need":
            missing = self.bind("missing" + at, step.missing)
            out(f"{indent}    raise RecordError({missing}, field={label})")
            out(f"{indent}{target} = {convert}")
            return
        empty = self.constant("empty" + at, step.empty)
        out(f"{indent}    {target} = {empty}")
        out(f"{indent}else:")
        if step.mode == "optional":
            out(f"{indent}    {target} = {convert}")
            return
        out(f"{indent}    try:")
        out(f"{indent}        {target} = {convert}")
        out(f"{indent}    except RecordError as exc:")
        change = 'f"cleared the invalid value {v!r}: {exc.reason}"'
        out(f"{indent}        notes.append(({label}, {change}))")
        out(f"{indent}        {target} = {empty}")

    def values(self, template: Sequence[Any], computed: set[int]) -> str:
        """The record's values in constructor order: computed ones or template constants."""
        return ", ".join(
            f"f{position}" if position in computed else self.constant(f"t{position}", value)
            for position, value in enumerate(template)
        )

    def make(self, name: str, signature: str) -> Any:
        parameters = ", ".join(self.bound)
        body = [f"    def {name}({signature}):", *("        " + line for line in self.lines)]
        source = "\n".join([f"def _make({parameters}):", *body, f"    return {name}"])
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<records.{name}>", "exec"), namespace)  # the text just above
        return namespace["_make"](**self.bound)


def record_function(
    layout: Sequence[tuple[int, Step]],
    updated: tuple[int, Step] | None,
    template: Sequence[Any],
    assemble: Callable[[list[Any], tuple[Any, ...]], Any],
    rows: Callable[[Any, Any, Any], tuple[Any, ...]] | None,
    unset: Any,
) -> RecordFunction:
    """``build(raw, notes, updated, given_rows)``: the steps of ``layout``, then
    ``updated`` unless given (``unset`` when not), then the rows, into ``assemble``."""
    writer = _Writer()
    out = writer.lines.append
    out('if not hasattr(raw, "get"):')
    out('    raise RecordError(f"expected an object, got {type(raw).__name__}")')
    out("get = raw.get")
    for index, (position, step) in enumerate(layout):
        writer.step(index, step, f"f{position}", "", "raw")
    computed = {position for position, _ in layout}
    if updated is not None:
        position, step = updated
        out(f"if updated is {writer.bind('UNSET', unset)}:")
        writer.step(len(layout), step, f"f{position}", "    ", "raw")
        out("else:")
        out(f"    f{position} = updated")
        computed.add(position)
    if rows is not None:
        out(f"built = {writer.bind('rows', rows)}(raw, notes, given)")
    else:
        out("built = ()")
    out(f"return {writer.bind('assemble', assemble)}([{writer.values(template, computed)}], built)")
    made: RecordFunction = writer.make("build", "raw, notes, updated, given")
    return made


def row_function(
    layout: Sequence[tuple[int, Step]], template: Sequence[Any], kind: type
) -> RowFunction:
    """``row(item, notes)``: one of a record's rows (the caller checks it is a mapping)."""
    writer = _Writer()
    writer.lines.append("get = item.get")
    for index, (position, step) in enumerate(layout):
        writer.step(index, step, f"f{position}", "", "item")
    values = writer.values(template, {position for position, _ in layout})
    writer.lines.append(f"return {writer.bind('kind', kind)}({values})")
    made: RowFunction = writer.make("row", "item, notes")
    return made
