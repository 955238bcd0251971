"""Normalisation of raw source values into canonical ones.

Every function takes a raw value and returns the canonical value or raises
``RecordError`` naming the field and saying what is wrong, so a source can quarantine the
one record and move on. Functions that can *fix* a value (truncating a huge field) report
the fix through an optional ``notes`` list instead of failing.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel.numbers import get_currency_precision, list_currencies
from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator

from crmsync.errors import RecordError
from crmsync.records import ConsentState, OrderStatus

MAX_TEXT = 255
_WS = re.compile(r"\s+")
_NOT_REAL_CURRENCIES = frozenset({"XXX", "XTS"})
_CURRENCIES = frozenset(list_currencies()) - _NOT_REAL_CURRENCIES

Notes = list[tuple[str, str]]  # (field, what was changed)


def text(
    value: object, field: str, *, notes: Notes | None = None, limit: int = MAX_TEXT
) -> str | None:
    """NFC, trimmed, inner whitespace collapsed; empty becomes None; over ``limit`` is cut."""
    if value is None:
        return None
    cleaned = _WS.sub(" ", unicodedata.normalize("NFC", str(value))).strip()
    if not cleaned:
        return None
    if len(cleaned) > limit:
        if notes is None:
            raise RecordError(f"longer than {limit} characters ({len(cleaned)})", field=field)
        notes.append((field, f"truncated from {len(cleaned)} to {limit} characters"))
        cleaned = cleaned[:limit].rstrip()
    return cleaned


def required_id(value: object, field: str) -> str:
    """A record's identifier: a non-empty string of at most 128 characters."""
    cleaned = text(value, field, limit=128)
    if cleaned is None:
        raise RecordError("missing identifier; every record needs one", field=field)
    return cleaned


def email(value: object, field: str = "email") -> str | None:
    """Trimmed, lower-cased, syntax-checked e-mail (no DNS look-up); None when empty.

    Turkish dotted capital İ (what Turkish-locale upper-casing makes of ``i``) becomes
    ``i``. Other non-ASCII characters are refused, since the marketing tools accept ASCII
    addresses only.
    """
    raw = text(value, field)
    if raw is None:
        return None
    try:
        return _checked_email(raw)
    except EmailNotValidError as exc:
        raise RecordError(f"invalid e-mail address {raw!r}: {exc}", field=field, value=raw) from exc


@lru_cache(maxsize=65_536)
def _checked_email(raw: str) -> str:
    """The costly part (tens of µs), cached: orders and carts repeat their customer's address."""
    candidate = raw.replace("\u0130", "i").lower()  # İ -> i before lower() makes i̇
    result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    return str(result.normalized).lower()


def phone(value: object, field: str = "phone", *, region: str = "TR") -> str | None:
    """E.164 phone number (+905321234567); numbers without a country code use ``region``."""
    raw = text(value, field)
    if raw is None:
        return None
    found = _e164(raw, region)
    if found is None:
        raise RecordError(
            f"invalid phone number {raw!r} for region {region}", field=field, value=raw
        )
    return found


@lru_cache(maxsize=65_536)
def _e164(raw: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def currency(value: object, field: str = "currency") -> str:
    raw = text(value, field, limit=8)
    code = (raw or "").upper()
    if code not in _CURRENCIES:
        raise RecordError(f"unknown ISO 4217 currency code {raw!r}", field=field, value=raw)
    return code


@lru_cache(maxsize=512)
def minor_unit_exponent(code: str) -> int:
    """Digits after the decimal point of ``code`` (TRY 2, JPY 0, KWD 3)."""
    return int(get_currency_precision(code))


def money(value: object, field: str, *, allow_negative: bool = False) -> Decimal:
    """A finite Decimal; strings may use a decimal comma (``"1.234,50"`` or ``"12,5"``)."""
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = Decimal(str(value))
    else:
        raw = text(value, field, limit=64)
        if raw is None:
            raise RecordError("missing amount", field=field)
        amount = _parse_decimal(raw, field)
    if not amount.is_finite():
        raise RecordError(f"amount is not a finite number: {value!r}", field=field, value=value)
    if amount < 0 and not allow_negative:
        raise RecordError(f"negative amount {amount}", field=field, value=value)
    return amount


def _parse_decimal(raw: str, field: str) -> Decimal:
    cleaned = raw.replace(" ", "").replace("\u00a0", "")
    if "," in cleaned and "." in cleaned:
        # the separator that comes last is the decimal one: 1.234,50 or 1,234.50
        if cleaned.rfind(",") > cleaned.rfind("."):
            cleaned = cleaned.replace(".", "").replace(",", ".")
        else:
            cleaned = cleaned.replace(",", "")
    elif "," in cleaned:
        cleaned = cleaned.replace(",", ".")
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:
        raise RecordError(f"not a number: {raw!r}", field=field, value=raw) from exc


def quantity(value: object, field: str = "quantity") -> int:
    try:
        number = Decimal(str(value).strip()) if value is not None else None
    except InvalidOperation as exc:
        raise RecordError(f"not a number: {value!r}", field=field, value=value) from exc
    if number is None or not number.is_finite() or number != number.to_integral_value():
        raise RecordError(f"quantity must be a whole number, got {value!r}", field=field)
    if number <= 0:
        raise RecordError(f"quantity must be positive, got {value!r}", field=field)
    return int(number)


@lru_cache(maxsize=64)
def timezone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RecordError(f"unknown time zone {name!r}", field="timezone") from exc


def clear_caches() -> None:
    """Forget the cached e-mail and phone validations (for benchmarks)."""
    _checked_email.cache_clear()
    _e164.cache_clear()


def zone_name(name: str) -> str:
    """``name`` when it is an IANA time zone: a configuration check (``ZoneName``), so a
    bad zone fails ``crmsync check`` under its key instead of the run that reads it."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as UTC") from exc
    return name


ZoneName = Annotated[str, AfterValidator(zone_name)]


def timestamp(
    value: object, field: str, *, tz: tzinfo = UTC, fmt: str | None = None
) -> datetime | None:
    """A timezone-aware UTC datetime. Naive values are read in ``tz`` (the source's zone).

    Accepts ISO 8601 (with ``Z``), epoch seconds or milliseconds, or ``fmt`` (strptime).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value
        try:
            parsed = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise RecordError(f"epoch time {value!r} is out of range", field=field) from exc
    else:
        raw = str(value).strip()
        if not raw:
            return None
        try:
            if fmt:
                parsed = datetime.strptime(raw, fmt)
            elif raw.isdigit():
                return timestamp(int(raw), field)
            else:
                parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise RecordError(
                f"unparseable date/time {raw!r}"
                + (f" (expected format {fmt})" if fmt else " (expected ISO 8601)"),
                field=field,
                value=raw,
            ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    if not 1970 <= parsed.year <= 2200:
        raise RecordError(f"date {parsed.isoformat()} is out of range", field=field)
    return parsed.astimezone(UTC)


def birthday(value: object, field: str = "birthday", *, fmt: str | None = None) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    raw = str(value).strip()
    if not raw:
        return None
    try:
        parsed = datetime.strptime(raw, fmt).date() if fmt else date.fromisoformat(raw[:10])
    except ValueError as exc:
        raise RecordError(f"unparseable birthday {raw!r}", field=field, value=raw) from exc
    if not 1900 <= parsed.year <= 2100:
        raise RecordError(f"birthday {parsed} is out of range", field=field)
    return parsed


def country(value: object, field: str = "country") -> str | None:
    raw = text(value, field, limit=64)
    if raw is None:
        return None
    code = raw.upper()
    if len(code) != 2 or not code.isalpha():
        code = _COUNTRY_NAMES.get(raw.casefold(), "")
    if not code:
        raise RecordError(
            f"country {raw!r} is not an ISO 3166-1 alpha-2 code", field=field, value=raw
        )
    return code


_COUNTRY_NAMES = {"türkiye": "TR", "turkiye": "TR", "turkey": "TR", "tr": "TR"}

_TRUE = frozenset({"1", "true", "yes", "y", "t", "evet", "subscribed", "opted_in", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "f", "hayır", "hayir", "unsubscribed", "off", ""})


def boolean(value: object, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    key = str(value).strip().casefold()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise RecordError(f"expected true/false, got {value!r}", field=field, value=value)


_CONSENT = {
    "subscribed": ConsentState.SUBSCRIBED,
    "opted_in": ConsentState.SUBSCRIBED,
    "opt_in": ConsentState.SUBSCRIBED,
    "true": ConsentState.SUBSCRIBED,
    "yes": ConsentState.SUBSCRIBED,
    "1": ConsentState.SUBSCRIBED,
    "evet": ConsentState.SUBSCRIBED,
    "unsubscribed": ConsentState.UNSUBSCRIBED,
    "opted_out": ConsentState.UNSUBSCRIBED,
    "opt_out": ConsentState.UNSUBSCRIBED,
    "false": ConsentState.UNSUBSCRIBED,
    "no": ConsentState.UNSUBSCRIBED,
    "0": ConsentState.UNSUBSCRIBED,
    "hayır": ConsentState.UNSUBSCRIBED,
    "hayir": ConsentState.UNSUBSCRIBED,
    "cleaned": ConsentState.UNSUBSCRIBED,
    "": ConsentState.NONE,
    "none": ConsentState.NONE,
    "unknown": ConsentState.NONE,
    "not_subscribed": ConsentState.NONE,
    "pending": ConsentState.NONE,
}


def consent_state(value: object, field: str) -> ConsentState:
    """Reads the common spellings of marketing consent; anything unclear is refused."""
    if value is None:
        return ConsentState.NONE
    if isinstance(value, bool):
        return ConsentState.SUBSCRIBED if value else ConsentState.UNSUBSCRIBED
    key = str(value).strip().casefold()
    if key in _CONSENT:
        return _CONSENT[key]
    raise RecordError(
        f"unknown consent value {value!r} (use subscribed, unsubscribed or none)", field=field
    )


_STATUS = {
    "pending": OrderStatus.PENDING,
    "open": OrderStatus.PENDING,
    "paid": OrderStatus.PAID,
    "processing": OrderStatus.PAID,
    "completed": OrderStatus.FULFILLED,
    "complete": OrderStatus.FULFILLED,
    "fulfilled": OrderStatus.FULFILLED,
    "shipped": OrderStatus.FULFILLED,
    "delivered": OrderStatus.FULFILLED,
    "cancelled": OrderStatus.CANCELLED,
    "canceled": OrderStatus.CANCELLED,
    "refunded": OrderStatus.REFUNDED,
}


def order_status(value: object, field: str = "status") -> OrderStatus:
    key = (text(value, field) or "").casefold()
    if key in _STATUS:
        return _STATUS[key]
    raise RecordError(
        f"unknown order status {value!r} (known: {', '.join(sorted(set(_STATUS)))})", field=field
    )
