"""Source mapping: a stream's field specs compiled once into a pure record builder.

``compile_stream`` checks every configured name against the canonical record of the
stream (reporting all unknown or missing keys at once, with their TOML keys) and returns
a ``Mapper`` whose ``build(raw)`` turns one decoded JSON record into a canonical record,
normalised with ``crmsync.normalize``. A bad value raises ``RecordError`` naming the
canonical field, which the source turns into a quarantined ``RecordIssue``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.rest.convert import CART, CUSTOMER, ITEM, LINE, ORDER, Convert, Ctx, Factory
from connectors.rest.paths import Getter, compile_path
from connectors.rest.streams import FieldSpec, FieldValue, ItemsConfig, StreamConfig
from crmsync import normalize
from crmsync.errors import ConfigError, ConfigIssue, RecordError
from crmsync.records import (
    Cart,
    CartItem,
    Consent,
    ConsentState,
    Customer,
    Order,
    OrderLine,
    Record,
    Stream,
)

REQUIRED = {
    Stream.CUSTOMERS: ("external_id",),
    Stream.ORDERS: ("external_id", "placed_at", "status", "currency", "total"),
    Stream.CARTS: ("external_id", "currency", "value"),
}
REQUIRED_ROWS = ("quantity", "unit_price")
TABLES: dict[Stream, dict[str, Factory]] = {
    Stream.CUSTOMERS: CUSTOMER,
    Stream.ORDERS: ORDER,
    Stream.CARTS: CART,
}


def _amount(value: Any, field: str) -> Decimal:
    return normalize.money(value, field, allow_negative=True)


class _Field:
    """One canonical field: where to read it, how to pre-process it, how to normalise it."""

    __slots__ = (
        "convert", "first", "getters", "minus", "name", "per", "plain", "single", "spec", "sum",
    )  # fmt: skip

    def __init__(self, name: str, spec: FieldSpec, convert: Convert, key: str) -> None:
        self.name = name
        self.spec = spec
        self.convert = convert
        paths = [spec.path] if isinstance(spec.path, str) else list(spec.path)
        self.getters = [compile_path(p, key=key) for p in paths]
        self.first = self.getters[0]
        self.sum = compile_path(spec.sum, key=key) if spec.sum else None
        self.minus = compile_path(spec.minus, key=key) if spec.minus else None
        self.per = compile_path(spec.per, key=key) if spec.per else None
        self.plain = not (
            spec.default is not None or spec.map or spec.null_if or self.sum or self.minus
            or self.per or spec.abs
        )  # fmt: skip
        self.single = self.plain and len(self.getters) == 1

    def raw(self, record: Any) -> Any:
        value = None
        for getter in self.getters:
            value = getter(record)
            if value is not None and value != "":
                break
        if self.plain:
            return value
        spec = self.spec
        if value is None or value == "":
            value = spec.default
        if self.sum is not None:
            items = value if isinstance(value, list) else []
            value = sum((_amount(self.sum(item) or 0, self.name) for item in items), Decimal(0))
        if value is not None and spec.null_if and str(value) in spec.null_if:
            return None
        if value is not None and spec.map:
            value = spec.map.get(str(value), value)
        if value is not None and self.minus is not None:
            value = _amount(value, self.name) - _amount(self.minus(record) or 0, self.name)
        if value is not None and self.per is not None:
            divisor = _amount(self.per(record), self.name)
            if divisor == 0:
                raise RecordError("cannot divide by a zero quantity", field=self.name)
            try:
                value = _amount(value, self.name) / divisor
            except InvalidOperation as exc:
                raise RecordError(f"cannot divide {value!r}", field=self.name) from exc
        if value is not None and spec.abs:
            value = abs(_amount(value, self.name))
        return value

    def value(self, record: Any, notes: normalize.Notes, prefix: str = "") -> Any:
        raw = self.first(record) if self.single else self.raw(record)
        if raw is None or raw == "":  # an empty string is "not given" for every type
            return None
        return self.convert(raw, prefix + self.name if prefix else self.name, notes)


def _spec(value: FieldValue | str) -> FieldSpec:
    """Built configs hold FieldSpecs; configs made with model_construct may hold paths."""
    return FieldSpec(path=value) if isinstance(value, str) else value


def _compile_fields(
    fields: Mapping[str, FieldValue],
    table: Mapping[str, Factory],
    required: tuple[str, ...],
    key: str,
    issues: list[ConfigIssue],
    ctx: Ctx,
) -> dict[str, _Field]:
    compiled: dict[str, _Field] = {}
    for name, value in fields.items():
        spec = _spec(value)
        if name not in table:
            issues.append(
                ConfigIssue(f"{key}.{name}", "not a canonical field", ", ".join(sorted(table)))
            )
        elif spec.path not in ("", []):
            try:
                compiled[name] = _Field(name, spec, table[name](spec, ctx), f"{key}.{name}")
            except ConfigError as exc:
                issues.extend(exc.issues)
    for name in required:
        if name not in compiled:
            issues.append(ConfigIssue(f"{key}.{name}", "required field is not mapped"))
    return compiled


@dataclass(frozen=True)
class _Rows:
    getter: Getter
    fields: dict[str, _Field]
    name: str  # "lines" (orders) or "items" (carts), as the config and issues call them


class Mapper:
    """Builds canonical records of one stream from decoded JSON records."""

    def __init__(self, stream: Stream, fields: dict[str, _Field], rows: _Rows | None) -> None:
        self.stream = stream
        self._fields = fields
        self._rows = rows
        self._updated = fields.get("updated_at")
        self._id = fields["external_id"]

    def external_id(self, raw: Any) -> str | None:
        value = self._id.raw(raw)
        return None if value is None else str(value)

    def updated_at(self, raw: Any) -> datetime | None:
        """Read first, so records outside (since, until] are skipped before full mapping."""
        if self._updated is None:
            return None
        value: datetime | None = self._updated.value(raw, [])
        return value

    def build(self, raw: Any, notes: normalize.Notes, updated_at: Any = ...) -> Record:
        """The canonical record; pass ``updated_at`` when already read, to skip re-reading."""
        if not isinstance(raw, dict):
            raise RecordError(f"expected a JSON object, got {type(raw).__name__}")
        values = {
            name: spec.value(raw, notes)
            for name, spec in self._fields.items()
            if name != "updated_at"
        }
        values["updated_at"] = self.updated_at(raw) if updated_at is ... else updated_at
        for name in REQUIRED[self.stream]:
            if values.get(name) is None:
                raise RecordError("missing value for a required field", field=name)
        if self.stream == Stream.CUSTOMERS:
            return _customer(values)
        rows = self._build_rows(raw, notes)
        if self.stream == Stream.ORDERS:
            return _order(values, rows)
        return _cart(values, rows)

    def _build_rows(self, raw: Any, notes: normalize.Notes) -> list[dict[str, Any]]:
        if self._rows is None:
            return []
        found = self._rows.getter(raw)
        if found is None:
            return []
        if not isinstance(found, list):
            raise RecordError("expected a list of rows", field=self._rows.name)
        rows = []
        for index, item in enumerate(found):
            prefix = f"{self._rows.name}[{index}]."
            row = {
                name: spec.value(item, notes, prefix) for name, spec in self._rows.fields.items()
            }
            for name in REQUIRED_ROWS:
                if row.get(name) is None:
                    raise RecordError("missing value for a required field", field=prefix + name)
            rows.append(row)
        return rows


def _consent_of(values: dict[str, Any], channel: str) -> Consent | None:
    if f"{channel}_consent" not in values and f"{channel}_consent_at" not in values:
        return None
    state = values.pop(f"{channel}_consent", None) or ConsentState.NONE
    return Consent(state, values.pop(f"{channel}_consent_at", None))


def _customer(values: dict[str, Any]) -> Customer:
    email_consent = _consent_of(values, "email")
    sms_consent = _consent_of(values, "sms")
    values["deleted"] = bool(values.get("deleted"))
    return Customer(**values, email_consent=email_consent, sms_consent=sms_consent)


def _money_or_zero(values: dict[str, Any], name: str) -> None:
    if values.get(name) is None:
        values[name] = Decimal(0)


def _order(values: dict[str, Any], rows: list[dict[str, Any]]) -> Order:
    _money_or_zero(values, "discount_total")
    _money_or_zero(values, "refunded_total")
    lines = []
    for row in rows:
        _money_or_zero(row, "discount")
        lines.append(OrderLine(**{"sku": None, "product": None, "category": None, **row}))
    return Order(**values, lines=tuple(lines))


def _cart(values: dict[str, Any], rows: list[dict[str, Any]]) -> Cart:
    values["converted"] = bool(values.get("converted"))
    items = tuple(
        CartItem(**{"sku": None, "product": None, "category": None, **row}) for row in rows
    )
    return Cart(**{"customer_external_id": None, "email": None, **values}, items=items)


def compile_stream(stream: Stream, config: StreamConfig, ctx: Ctx, key: str) -> Mapper:
    """Compiles and checks one stream's mapping; raises one ConfigError with every issue."""
    issues: list[ConfigIssue] = []
    fields = _compile_fields(
        config.fields, TABLES[stream], REQUIRED[stream], f"{key}.fields", issues, ctx
    )
    rows_config: ItemsConfig | None = None
    if stream == Stream.ORDERS:
        rows_config, row_table, rows_key = config.lines, LINE, "lines"
    elif stream == Stream.CARTS:
        rows_config, row_table, rows_key = config.items, ITEM, "items"
    unused = {Stream.CUSTOMERS: ("lines", "items"), Stream.ORDERS: ("items",)}.get(
        stream, ("lines",)
    )
    for name in unused:
        if getattr(config, name) is not None:
            issues.append(ConfigIssue(f"{key}.{name}", f"not used by the {stream} stream"))
    rows = None
    if rows_config is not None:
        row_fields = _compile_fields(
            rows_config.fields, row_table, REQUIRED_ROWS, f"{key}.{rows_key}.fields", issues, ctx
        )
        try:
            getter = compile_path(rows_config.path, key=f"{key}.{rows_key}.path")
            rows = _Rows(getter, row_fields, rows_key)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return Mapper(stream, fields, rows)


def mapping_issues(streams: Iterable[tuple[str, StreamConfig]]) -> list[ConfigIssue]:
    """Every mapping problem of the enabled streams, keyed relative to the source's table.

    Run when the config is validated, so ``crmsync`` reports them with the rest of the
    configuration instead of when the source is first built.
    """
    neutral = Ctx(tz=UTC, region="TR")  # zone and region never make a mapping invalid
    issues: list[ConfigIssue] = []
    for name, config in streams:
        if not config.enabled:
            continue
        try:
            compile_stream(Stream(name), config, neutral, f"streams.{name}")
        except ConfigError as exc:
            issues.extend(exc.issues)
    return issues
