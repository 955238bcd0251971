"""One field spec compiled into one step: ``step(raw, notes) -> canonical value``.

The work a spec asks for is decided here, once: a plain path becomes a bare getter and
a conversion; only what a spec uses (paths tried in turn, const, default, null_if, map,
arithmetic) is put in its reader. A ``Step`` also keeps its parts (the plain key it
reads, its conversion, what an empty value does) so that ``generate`` can write a
stream's steps into one function. Everything ``run`` could only find out row by row but
the configuration already decides (a constant that is no valid status, arithmetic on an
e-mail, a format on a phone) is a ``ConfigIssue`` under the field's TOML key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from connectors.records.context import MappingContext
from connectors.records.fields import ZERO, Convert, Kind, amount, format_problem
from connectors.records.paths import Getter, compile_path, plain_key
from connectors.records.spec import FieldSpec
from crmsync import normalize
from crmsync.errors import ConfigError, ConfigIssue, RecordError

# An empty value: "need" raises, the others give the kind's empty value. A bad value:
# "correct" clears it with a note, the others raise.
Mode = Literal["need", "optional", "correct"]


@dataclass(frozen=True, slots=True, eq=False)
class Step:
    """A compiled field: call it as ``step(raw, notes)``; its parts are for ``generate``."""

    label: str  # the field as issues name it
    read: Getter  # raw -> the value before conversion
    key: str | None  # ``read`` is a bare ``raw.get(key)``
    convert: Convert
    mode: Mode
    empty: Any  # the value when nothing is found (or a correctable value is bad)
    missing: str  # the reason when a needed field finds nothing
    run: Callable[[Any, normalize.Notes], Any]

    def __call__(self, raw: Any, notes: normalize.Notes) -> Any:
        return self.run(raw, notes)


def _text_key(value: Any) -> str:
    """How ``null_if`` and ``map`` see a raw value: TOML keys are strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def _bare(spec: FieldSpec) -> bool:
    """The spec reads one path and does nothing else to the value."""
    return (
        len(spec.paths()) == 1
        and spec.default is None
        and not spec.null_if
        and not spec.map
        and not spec.arithmetic()
    )


def reader(spec: FieldSpec, ctx: MappingContext, label: str, key: str) -> Getter:
    """raw -> the value before conversion (None or '' when nothing was found)."""
    getters = [compile_path(path, key=key, flat=ctx.flat) for path in spec.paths()]
    const, default = spec.const, spec.default
    null_if, mapping = frozenset(spec.null_if), dict(spec.map)
    arithmetic = _arithmetic(spec, ctx, label, key) if spec.arithmetic() else None
    if _bare(spec):
        return getters[0]

    def read(raw: Any) -> Any:
        value: Any = const
        if value is None:
            for getter in getters:
                value = getter(raw)
                if value is not None and value != "":
                    break
            if value is None or value == "":
                value = default
        if value is not None and (null_if or mapping):
            text = _text_key(value)
            if text in null_if:
                return None
            value = mapping.get(text, value)
        if arithmetic is not None:
            return arithmetic(raw, value)
        return value

    return read


def _arithmetic(
    spec: FieldSpec, ctx: MappingContext, label: str, key: str
) -> Callable[[Any, Any], Any]:
    def path(found: str) -> Getter:
        return compile_path(found, key=key, flat=ctx.flat)

    item = _amount_reader(spec.sum, ctx, label, f"{key}.sum") if spec.sum else None
    times = path(spec.times) if spec.times else None
    plus = [path(p) for p in spec.plus]
    minus = [path(p) for p in spec.minus]
    per = path(spec.per) if spec.per else None
    absolute = spec.abs

    def compute(raw: Any, value: Any) -> Any:
        if item is not None:
            items = value if isinstance(value, list | tuple) else ()
            value = sum((item(entry) or ZERO for entry in items), ZERO)
        elif value is None or value == "":
            return None
        result = amount(value, label, allow_negative=True)
        if times is not None:
            result *= _operand(times(raw), label)
        for getter in plus:
            result += _optional(getter(raw), label)
        for getter in minus:
            result -= _optional(getter(raw), label)
        if per is not None:
            divisor = _operand(per(raw), label)
            if divisor == 0:
                raise RecordError("cannot divide by zero (the 'per' value is 0)", field=label)
            try:
                result /= divisor
            except InvalidOperation as exc:
                raise RecordError(f"cannot divide {result} by {divisor}", field=label) from exc
        return abs(result) if absolute else result

    return compute


def _operand(value: Any, label: str) -> Decimal:
    if value is None or value == "":
        raise RecordError("missing number for times/per", field=label)
    return amount(value, label, allow_negative=True)


def _optional(value: Any, label: str) -> Decimal:
    return ZERO if value is None or value == "" else amount(value, label, allow_negative=True)


def _amount_reader(
    spec: FieldSpec, ctx: MappingContext, label: str, key: str
) -> Callable[[Any], Decimal | None]:
    """A nested spec evaluated on each item of a list, as an amount (for ``sum``)."""
    read = reader(spec, ctx, label, key)

    def value(item: Any) -> Decimal | None:
        found = read(item)
        if found is None or found == "":
            return None
        return amount(found, label, allow_negative=True)

    return value


def compile_field(
    spec: FieldSpec, kind: Kind, ctx: MappingContext, *, label: str, key: str, required: bool
) -> Step:
    """The step of one mapped field; ``ConfigError`` lists every problem of its spec."""
    issues = _spec_issues(spec, kind, key)
    try:
        read = reader(spec, ctx, label, key)
        convert = kind.factory(spec, ctx, label)
    except ConfigError as exc:
        issues.extend(exc.issues)
    except RecordError as exc:  # an unknown time zone, caught before pydantic could
        issues.append(ConfigIssue(f"{key}.timezone", exc.reason))
    if not issues:
        issues = _constant_issues(spec, kind, convert, key)
    if issues:
        raise ConfigError(issues)
    empty, missing = kind.empty, kind.missing
    mode: Mode = "correct" if kind.correctable else "need" if required else "optional"
    bare = plain_key(spec.paths()[0], flat=ctx.flat) if _bare(spec) else None
    run = _run(mode, read, convert, label, empty, missing)
    return Step(label, read, bare, convert, mode, empty, missing, run)


def _run(
    mode: Mode, read: Getter, convert: Convert, label: str, empty: Any, missing: str
) -> Callable[[Any, normalize.Notes], Any]:
    if mode == "correct":

        def corrected(raw: Any, notes: normalize.Notes) -> Any:
            value = read(raw)
            if value is None or value == "":
                return empty
            try:
                return convert(value, notes)
            except RecordError as exc:
                notes.append((label, f"cleared the invalid value {value!r}: {exc.reason}"))
                return empty

        return corrected
    if mode == "need":

        def needed(raw: Any, notes: normalize.Notes) -> Any:
            value = read(raw)
            if value is None or value == "":
                raise RecordError(missing, field=label)
            return convert(value, notes)

        return needed

    def optional(raw: Any, notes: normalize.Notes) -> Any:
        value = read(raw)
        if value is None or value == "":
            return empty
        return convert(value, notes)

    return optional


def _spec_issues(spec: FieldSpec, kind: Kind, key: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if spec.arithmetic() and not kind.numeric:
        issues.append(
            ConfigIssue(key, "sum, times, plus, minus, per and abs apply to amounts only")
        )
    if not kind.temporal:
        issues += [
            ConfigIssue(f"{key}.{name}", "only dates and times take a format or time zone")
            for name in ("format", "timezone")
            if getattr(spec, name) is not None
        ]
    elif spec.format in ("epoch", "epoch_ms") and kind.correctable:
        issues.append(ConfigIssue(f"{key}.format", "a birthday is a date, not an epoch time"))
    elif spec.format and (problem := format_problem(spec.format)):
        issues.append(ConfigIssue(f"{key}.format", problem))
    return issues


def _constant_issues(spec: FieldSpec, kind: Kind, convert: Any, key: str) -> list[ConfigIssue]:
    """Constants, defaults and map targets converted now: every row would fail on them."""
    given = [("const", spec.const), ("default", spec.default)]
    given += [(f"map.{raw}", target) for raw, target in spec.map.items()]
    issues: list[ConfigIssue] = []
    for name, value in given:
        if value is None or value == "":
            continue
        try:
            if spec.arithmetic():
                amount(value, name, allow_negative=True)
            else:
                convert(value, [])
        except RecordError as exc:
            issues.append(ConfigIssue(f"{key}.{name}", f"{exc.reason}"))
    return issues
