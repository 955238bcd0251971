"""Canonical field tables: for each field of each record, how a raw value is normalised.

Each entry is a factory that binds a field spec (its time zone, date format) and the
source context (default zone, phone region) once, when the mapping is compiled, and
returns ``convert(value, field, notes)``: the per-record work is then one call into
``crmsync.normalize``, which raises ``RecordError`` naming the field for a bad value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from functools import lru_cache
from typing import Any

from connectors.rest.streams import FieldSpec
from crmsync import normalize

Convert = Callable[[Any, str, normalize.Notes], Any]
Factory = Callable[[FieldSpec, "Ctx"], Convert]


@dataclass(frozen=True, slots=True)
class Ctx:
    tz: tzinfo  # for naive times without a zone of their own
    region: str  # for phone numbers without a country code


# E-mail and phone validation dominate mapping time, and an order repeats its customer's
# address: a bounded cache of these pure functions roughly halves the cost of a pull.
_cached_email = lru_cache(maxsize=1 << 16)(normalize.email)
_cached_phone = lru_cache(maxsize=1 << 16)(normalize.phone)


def _text(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.text(v, f, notes=n)


def _id(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.required_id(v, f)


def _ref(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.text(v, f, limit=128)


def _email(spec: FieldSpec, ctx: Ctx) -> Convert:
    def convert(v: Any, f: str, n: normalize.Notes) -> Any:
        return _cached_email(v, f) if isinstance(v, str) else normalize.email(v, f)

    return convert


def _phone(spec: FieldSpec, ctx: Ctx) -> Convert:
    region = ctx.region

    def convert(v: Any, f: str, n: normalize.Notes) -> Any:
        if isinstance(v, str):
            return _cached_phone(v, f, region=region)
        return normalize.phone(v, f, region=region)

    return convert


def _country(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.country(v, f)


def _currency(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.currency(v, f)


def _status(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.order_status(v, f)


def _time(spec: FieldSpec, ctx: Ctx) -> Convert:
    tz = normalize.timezone(spec.timezone) if spec.timezone else ctx.tz
    fmt = spec.format
    return lambda v, f, n: normalize.timestamp(v, f, tz=tz, fmt=fmt)


def _birthday(spec: FieldSpec, ctx: Ctx) -> Convert:
    fmt = spec.format
    return lambda v, f, n: normalize.birthday(v, f, fmt=fmt)


def _money(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.money(v, f)


def _quantity(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.quantity(v, f)


def _consent(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.consent_state(v, f)


def _bool(spec: FieldSpec, ctx: Ctx) -> Convert:
    return lambda v, f, n: normalize.boolean(v, f)


CUSTOMER: dict[str, Factory] = {
    "external_id": _id, "email": _email, "phone": _phone, "first_name": _text,
    "last_name": _text, "city": _text, "region": _text, "country": _country,
    "postal_code": _text, "address1": _text, "language": _text, "birthday": _birthday,
    "created_at": _time, "updated_at": _time, "email_consent": _consent,
    "email_consent_at": _time, "sms_consent": _consent, "sms_consent_at": _time,
    "deleted": _bool,
}  # fmt: skip
ORDER: dict[str, Factory] = {
    "external_id": _id, "customer_external_id": _ref, "email": _email, "placed_at": _time,
    "status": _status, "currency": _currency, "total": _money, "discount_total": _money,
    "refunded_total": _money, "updated_at": _time,
}  # fmt: skip
LINE: dict[str, Factory] = {
    "sku": _text, "product": _text, "category": _text, "quantity": _quantity,
    "unit_price": _money, "discount": _money,
}  # fmt: skip
CART: dict[str, Factory] = {
    "external_id": _id, "customer_external_id": _ref, "email": _email, "currency": _currency,
    "value": _money, "created_at": _time, "updated_at": _time, "checkout_url": _text,
    "converted": _bool,
}  # fmt: skip
ITEM: dict[str, Factory] = {
    "sku": _text, "product": _text, "category": _text, "quantity": _quantity,
    "unit_price": _money,
}  # fmt: skip


def clear_caches() -> None:
    """Forget cached e-mail/phone results, here and in normalize (benchmarks measure
    validation afresh)."""
    _cached_email.cache_clear()
    _cached_phone.cache_clear()
    normalize.clear_caches()
