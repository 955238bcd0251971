"""The canonical fields of each stream and how a raw value becomes each one.

Every field has a ``Kind``: a factory that binds the field spec, the source's context
and the field's label once, when a mapping is compiled, and returns
``convert(value, notes)``, so the per-row work is one call into ``crmsync.normalize``
(with exact fast paths for the common plain values). ``correctable`` kinds are optional
values whose bad spelling clears the value with a *corrected* note rather than dropping
the record; identity (ids, e-mail), consent, times and money never are.

The tables are in the order of the records' constructors (``builder`` relies on it);
fields after them (consent times, order-only amounts) are assembled separately.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from connectors.records.context import MappingContext
from connectors.records.phones import region_phones
from connectors.records.spec import FieldSpec
from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.records import ConsentState, Stream

Convert = Callable[[Any, normalize.Notes], Any]
Factory = Callable[[FieldSpec, MappingContext, str], Convert]


@dataclass(frozen=True, slots=True)
class Kind:
    factory: Factory
    correctable: bool = False  # a bad value is cleared and noted; the record is kept
    numeric: bool = False  # arithmetic (sum, times, plus, minus, per, abs) is allowed
    temporal: bool = False  # format and timezone are allowed
    empty: Any = None  # the value of a mapped field that finds nothing
    missing: str = "missing value; this field is required"  # a required one finding nothing


_TEXTS_LIMIT = 1 << 13  # remembered plain values per field: names, cities, products repeat


def _plain_text(limit: int, general: Convert, *, required: bool = False) -> Convert:
    """A text conversion with an exact fast path: a printable string holds no whitespace
    but U+0020, so with no double space and already NFC, normalize.text would only strip
    it. ``general`` takes the rest; ``required`` sends an empty result there too. Plain
    values are remembered (a bounded table per field): a repeated one costs a look-up."""
    is_nfc = unicodedata.is_normalized
    known: dict[str, str] = {}

    def convert(value: Any, notes: normalize.Notes) -> Any:
        if type(value) is not str:
            return general(value, notes)
        found = known.get(value)
        if found is not None:
            return found
        if (
            value.isprintable()
            and "  " not in value
            and (value.isascii() or is_nfc("NFC", value))
            and len(cleaned := value.strip()) <= limit
        ):
            if cleaned:
                if len(known) >= _TEXTS_LIMIT:
                    known.clear()
                known[value] = cleaned
                return cleaned
            if not required:
                return None
        return general(value, notes)

    return convert


def text(
    spec: FieldSpec, ctx: MappingContext, label: str, limit: int = normalize.MAX_TEXT
) -> Convert:
    def general(value: Any, notes: normalize.Notes) -> Any:
        return normalize.text(value, label, notes=notes, limit=limit)

    return _plain_text(limit, general)


def _limited(limit: int) -> Factory:
    return lambda spec, ctx, label: text(spec, ctx, label, limit)


def _id(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return _plain_text(128, lambda value, notes: normalize.required_id(value, label), required=True)


def _ref(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    # no notes: a reference too long is an error, never cut
    return _plain_text(128, lambda value, notes: normalize.text(value, label, limit=128))


def _email(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    memo = ctx.memo  # orders repeat their customer's address: validated once per source
    return lambda value, notes: normalize.email(value, label, memo=memo)


def _phone(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    region, memo = ctx.region, ctx.memo
    fast = region_phones(region)

    def convert(value: Any, notes: normalize.Notes) -> Any:
        # a plainly written national number needs no phonenumbers.parse (see phones)
        if fast is not None and type(value) is str:
            key = normalize.phone_key(value.strip())
            if key is not None and (found := fast.e164(key)) is not None:
                return found
        return normalize.phone(value, label, region=region, memo=memo)

    return convert


def _country(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return lambda value, notes: normalize.country(value, label)


def _currency(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return lambda value, notes: normalize.currency(value, label)


def _status(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return lambda value, notes: normalize.order_status(value, label)


def _time(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    tz = normalize.timezone(spec.timezone) if spec.timezone else ctx.tz
    fmt = spec.format or ctx.time_format
    if fmt in ("epoch", "epoch_ms"):
        scale = 1000 if fmt == "epoch_ms" else 1

        def epoch(value: Any, notes: normalize.Notes) -> Any:
            try:
                seconds = float(value) / scale
                moment = datetime.fromtimestamp(seconds, UTC)
            except (TypeError, ValueError, OverflowError, OSError) as exc:
                raise RecordError(
                    f"not an epoch time in {fmt}: {value!r}", field=label, value=value
                ) from exc
            return normalize.timestamp(moment, label)

        return epoch
    if fmt:
        return lambda value, notes: normalize.timestamp(value, label, tz=tz, fmt=fmt)
    iso = normalize.iso_timestamp

    def convert(value: Any, notes: normalize.Notes) -> Any:
        if type(value) is str and (found := iso(value, tz)) is not None:
            return found
        return normalize.timestamp(value, label, tz=tz)

    return convert


def format_problem(fmt: str) -> str | None:
    """Why ``fmt`` cannot read dates (a bad directive), or None: checked with the config so
    a typo fails ``crmsync check`` rather than every row of the run."""
    if fmt in ("epoch", "epoch_ms"):
        return None
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        return f"not a usable strptime format: {exc}"
    return None


def _birthday(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    fmt = spec.format or ctx.birthday_format
    return lambda value, notes: normalize.birthday(value, label, fmt=fmt)


def _money(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    known = _AMOUNTS

    def convert(value: Any, notes: normalize.Notes) -> Any:
        if type(value) is str and (found := known.get(value)) is not None:
            return found
        return amount(value, label)

    return convert


# Plain non-negative decimal strings already read: prices repeat (a catalogue, "0.00"),
# and a Decimal is immutable, so records may share one. Cleared when full.
_AMOUNTS: dict[str, Decimal] = {}
_AMOUNTS_LIMIT = 1 << 16


def amount(value: Any, label: str, *, allow_negative: bool = False) -> Decimal:
    """``normalize.money``, with an exact fast path for plain decimal strings."""
    if type(value) is str and value.isascii() and len(value) <= 64:
        digits = value[1:] if value[:1] == "-" else value
        if digits.replace(".", "", 1).isdigit():
            found = Decimal(value)
            if found >= 0:
                if len(_AMOUNTS) >= _AMOUNTS_LIMIT:
                    _AMOUNTS.clear()
                _AMOUNTS[value] = found
                return found
            if allow_negative:
                return found
    return normalize.money(value, label, allow_negative=allow_negative)


def _quantity(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    def convert(value: Any, notes: normalize.Notes) -> Any:
        if type(value) is int and value > 0:
            return value
        return normalize.quantity(value, label)

    return convert


def _consent(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return lambda value, notes: normalize.consent_state(value, label)


def _bool(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    return lambda value, notes: normalize.boolean(value, label)


def _flag_or_time(spec: FieldSpec, ctx: MappingContext, label: str) -> Convert:
    """True/false, or a completion time where a time means true (``completed_at``)."""
    at = _time(spec, ctx, label)

    def convert(value: Any, notes: normalize.Notes) -> Any:
        # a time is no true/false word: skip the exception boolean() would raise for it
        if type(value) is not str or value.strip().casefold() in normalize.BOOLEAN_WORDS:
            try:
                return normalize.boolean(value, label)
            except RecordError:
                pass
        try:
            return at(value, notes) is not None
        except RecordError as exc:
            raise RecordError(
                f"expected true/false or a date/time, got {value!r}", field=label, value=value
            ) from exc

    return convert


ZERO = Decimal(0)
TEXT = Kind(_limited(normalize.MAX_TEXT))
TIME = Kind(_time, temporal=True)
MONEY = Kind(_money, numeric=True, empty=ZERO)
SKU = Kind(_limited(128))

ID = Kind(_id, missing="missing identifier; every record needs one")

CUSTOMER: dict[str, Kind] = {
    "external_id": ID, "email": Kind(_email), "phone": Kind(_phone, correctable=True),
    "first_name": TEXT, "last_name": TEXT, "city": TEXT, "region": TEXT,
    "country": Kind(_country, correctable=True), "postal_code": Kind(_limited(32)),
    "address1": TEXT, "language": Kind(_limited(35)),
    "birthday": Kind(_birthday, correctable=True, temporal=True), "created_at": TIME,
    "updated_at": TIME, "deleted": Kind(_bool, empty=False),
    "email_consent": Kind(_consent, empty=ConsentState.NONE),
    "email_consent_at": TIME,
    "sms_consent": Kind(_consent, empty=ConsentState.NONE),
    "sms_consent_at": TIME,
}  # fmt: skip
ORDER: dict[str, Kind] = {
    "external_id": ID, "customer_external_id": Kind(_ref), "email": Kind(_email),
    "placed_at": TIME, "status": Kind(_status), "currency": Kind(_currency),
    "total": MONEY, "discount_total": MONEY, "refunded_total": MONEY, "updated_at": TIME,
    # used only to compute a total that is not mapped (see the package's docstring)
    "order_discount": MONEY, "shipping": MONEY, "tax": MONEY,
    # when the order reached a status (refunded: its latest refund); the events' times
    "fulfilled_at": TIME, "cancelled_at": TIME, "refunded_at": TIME,
}  # fmt: skip
CART: dict[str, Kind] = {
    "external_id": ID, "customer_external_id": Kind(_ref), "email": Kind(_email),
    "currency": Kind(_currency), "value": MONEY, "created_at": TIME, "updated_at": TIME,
    "checkout_url": Kind(_limited(2048)), "converted": Kind(_flag_or_time, empty=False),
}  # fmt: skip
LINE: dict[str, Kind] = {
    "sku": SKU, "product": TEXT, "category": TEXT,
    "quantity": Kind(_quantity, numeric=True), "unit_price": MONEY, "discount": MONEY,
}  # fmt: skip
ITEM: dict[str, Kind] = {
    "sku": SKU, "product": TEXT, "category": TEXT,
    "quantity": Kind(_quantity, numeric=True), "unit_price": MONEY,
}  # fmt: skip

FIELDS: dict[Stream, dict[str, Kind]] = {
    Stream.CUSTOMERS: CUSTOMER,
    Stream.ORDERS: ORDER,
    Stream.CARTS: CART,
}
ROW_FIELDS: dict[Stream, dict[str, Kind]] = {Stream.ORDERS: LINE, Stream.CARTS: ITEM}
REQUIRED: dict[Stream, tuple[str, ...]] = {
    Stream.CUSTOMERS: ("external_id",),
    Stream.ORDERS: ("external_id", "placed_at", "status", "currency"),
    Stream.CARTS: ("external_id", "currency"),
}
ROW_REQUIRED = ("quantity", "unit_price")
AMOUNT = {Stream.ORDERS: "total", Stream.CARTS: "value"}  # computed from rows when unmapped
TOTAL_PARTS = ("order_discount", "shipping", "tax")


def clear_caches() -> None:
    """Forget remembered e-mail/phone outcomes and amounts (benchmarks measure afresh)."""
    _AMOUNTS.clear()
    normalize.clear_caches()
