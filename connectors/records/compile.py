"""Compiling a stream's mapping: every check, then the flat layout of its steps.

``compile_stream`` checks the whole mapping against the stream's canonical record, all
problems at once and each under its TOML key: unknown fields, required fields not
mapped, a total neither mapped nor computable, an order or cart that could name nobody,
a consent time without its state, rows on a stream that has none, and whatever
``steps.compile_field`` finds in one field's spec. What passes here cannot make ``run``
fail for the configuration's sake; only a row's own values can.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from connectors.records import fields as F
from connectors.records.assemble import cart, customer, order
from connectors.records.builder import Assemble, Builder, Layout, Rows
from connectors.records.context import MappingContext, MappingKeys
from connectors.records.paths import compile_path
from connectors.records.spec import FieldSpec, RowsSpec
from connectors.records.steps import Step, compile_field, reader
from crmsync.errors import ConfigError, ConfigIssue
from crmsync.records import CartItem, OrderLine, Stream

DEFAULT_CONTEXT = MappingContext()


FieldInput = FieldSpec | str | Mapping[str, Any]


def _spec(value: FieldInput, key: str) -> FieldSpec:
    """A spec as the config models hold it, or as written (a path, a table) by a caller
    that builds its mapping in code."""
    if isinstance(value, FieldSpec):
        return value
    try:
        return FieldSpec.model_validate(value)
    except ValidationError as exc:
        issues = [
            ConfigIssue(".".join([key, *map(str, error["loc"])]), error["msg"])
            for error in exc.errors()
        ]
        raise ConfigError(issues) from exc


def _mapped(value: FieldInput | None) -> bool:
    try:
        return value is not None and _spec(value, "").mapped()
    except ConfigError:
        return True  # reported where the field is compiled


class _Compiler:
    """Collects issues while compiling one table of fields (a record's or its rows')."""

    def __init__(self, ctx: MappingContext, issues: list[ConfigIssue]) -> None:
        self.ctx = ctx
        self.issues = issues

    def table(
        self,
        given: Mapping[str, FieldInput],
        kinds: Mapping[str, F.Kind],
        required: Iterable[str],
        key: str,
    ) -> tuple[Layout, dict[str, FieldSpec], dict[str, str]]:
        specs: dict[str, FieldSpec] = {}
        failed: set[str] = set()
        for name, value in given.items():
            try:
                specs[name] = _spec(value, f"{key}.{name}")
            except ConfigError as exc:
                self.issues.extend(exc.issues)
                failed.add(name)
        mapped = {name: spec for name, spec in specs.items() if spec.mapped()}
        must = set(required) - failed
        names = list(kinds)
        layout: list[tuple[int, Step]] = []
        labels: dict[str, str] = {}
        for name, spec in specs.items():
            if name not in kinds:
                self.issues.append(
                    ConfigIssue(f"{key}.{name}", "not a canonical field here", ", ".join(kinds))
                )
            elif name in mapped:
                labels[name] = self._label(name, spec)
                try:
                    step = compile_field(
                        spec, kinds[name], self.ctx, label=labels[name],
                        key=f"{key}.{name}", required=name in must,
                    )  # fmt: skip
                except ConfigError as exc:
                    self.issues.extend(exc.issues)
                else:
                    layout.append((names.index(name), step))
        for name in sorted(
            must - set(mapped), key=lambda n: (n not in names, n in names and names.index(n))
        ):
            self.issues.append(
                ConfigIssue(f"{key}.{name}", "required, but not mapped", "give a path or a const")
            )
        found = mapped.get("external_id")
        if found is not None and (found.const is not None or found.default is not None):
            self.issues.append(ConfigIssue(f"{key}.external_id", "an id cannot be a constant"))
        return tuple(layout), mapped, labels

    def _label(self, name: str, spec: FieldSpec) -> str:
        return (spec.first_path() or name) if self.ctx.source_names else name


def compile_stream(
    stream: Stream,
    fields: Mapping[str, FieldInput],
    rows: RowsSpec | None = None,
    *,
    keys: MappingKeys,
    context: MappingContext = DEFAULT_CONTEXT,
    require: Iterable[str] = (),
) -> Builder:
    """Compiles and checks one stream's mapping; one ``ConfigError`` lists every issue."""
    issues: list[ConfigIssue] = []
    compiler = _Compiler(context, issues)
    kinds = F.FIELDS[stream]
    amount = F.AMOUNT.get(stream)
    amount_mapped = amount is not None and _mapped(fields.get(amount))
    required = [*F.REQUIRED[stream], *require] + ([amount] if amount and amount_mapped else [])
    layout, mapped, labels = compiler.table(fields, kinds, required, keys.fields)
    what = keys.rows_label or "rows"
    if amount and not amount_mapped and rows is None:
        issues.append(ConfigIssue(
            f"{keys.fields}.{amount}", "required, but not mapped",
            f"give a path, or map the {what} so that it is computed from them",
        ))  # fmt: skip
    if amount and amount_mapped:
        issues += [
            ConfigIssue(f"{keys.fields}.{name}", f"used only to compute a {amount} not mapped")
            for name in F.TOTAL_PARTS
            if name in mapped
        ]
    if stream is not Stream.CUSTOMERS and not {"email", "customer_external_id"} & set(mapped):
        issues.append(ConfigIssue(
            f"{keys.fields}.email", "neither email nor customer_external_id is mapped",
            "map either (or both): a record with neither cannot be joined to a person",
        ))  # fmt: skip
    for channel in ("email", "sms"):
        if f"{channel}_consent_at" in mapped and f"{channel}_consent" not in mapped:
            issues.append(ConfigIssue(
                f"{keys.fields}.{channel}_consent_at", f"mapped without {channel}_consent",
                "a consent time dates a consent state: map the state too",
            ))  # fmt: skip
    built_rows = _compile_rows(stream, rows, compiler, keys)
    if issues:
        raise ConfigError(issues)
    names = list(kinds)
    updated_position = names.index("updated_at")
    updated = next((entry for entry in layout if entry[0] == updated_position), None)
    layout = tuple(entry for entry in layout if entry[0] != updated_position)
    template = [kind.empty for kind in kinds.values()]
    assemble: Assemble
    if stream is Stream.CUSTOMERS:
        template[names.index("email_consent")] = template[names.index("sms_consent")] = None
        assemble = customer
    elif stream is Stream.ORDERS:
        compute_discount = "discount_total" not in mapped and rows is not None
        assemble = order(not amount_mapped, compute_discount, what)
    else:
        assemble = cart(not amount_mapped, what)
    id_spec = mapped["external_id"]
    raw_id = reader(id_spec, context, labels["external_id"], f"{keys.fields}.external_id")
    return Builder(stream, layout, template, assemble, updated, raw_id, built_rows)


def _compile_rows(
    stream: Stream, rows: RowsSpec | None, compiler: _Compiler, keys: MappingKeys
) -> Rows | None:
    if rows is None:
        return None
    if stream not in F.ROW_FIELDS:
        compiler.issues.append(ConfigIssue(keys.rows_path, f"the {stream} stream has no rows"))
        return None
    kinds = F.ROW_FIELDS[stream]
    layout, _, _ = compiler.table(rows.fields, kinds, F.ROW_REQUIRED, keys.rows_fields)
    try:
        getter = compile_path(rows.path, key=keys.rows_path, flat=compiler.ctx.flat)
    except ConfigError as exc:
        compiler.issues.extend(exc.issues)
        return None
    kind = OrderLine if stream is Stream.ORDERS else CartItem
    template = [entry.empty for entry in kinds.values()]
    return Rows(getter, layout, template, kind, keys.rows_label)


def mapping_issues(
    stream: Stream,
    fields: Mapping[str, FieldInput],
    rows: RowsSpec | None = None,
    *,
    keys: MappingKeys,
    context: MappingContext = DEFAULT_CONTEXT,
    require: Iterable[str] = (),
) -> list[ConfigIssue]:
    """Every problem of one stream's mapping (none: it compiles). For config validation,
    so ``crmsync check`` reports what ``run`` would fail on, under its keys."""
    try:
        compile_stream(stream, fields, rows, keys=keys, context=context, require=require)
    except ConfigError as exc:
        return list(exc.issues)
    return []
