"""Normalisation of raw source values into canonical ones.

Every function takes a raw value and returns the canonical value or raises
``RecordError`` naming the field and saying what is wrong, so a source can quarantine the
one record and move on. Functions that can *fix* a value (truncating a huge field) report
the fix through an optional ``notes`` list instead of failing.

Sources call these functions millions of times, so most of them open with an exact fast
path for a value already in its usual form (an ISO time with its offset, a plain ASCII
e-mail address, a currency code as written), which gives what the general path would and
leaves everything else to it. The two costly checks, e-mail validation and phone parsing,
also remember their outcomes in a ``Memo`` that a source keeps for its reads. The e-mail
validator is imported on first use: its import compiles regular expressions for about
35 ms, which a run that reads no address need not pay.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel.numbers import get_currency_precision, list_currencies
from pydantic import AfterValidator

from crmsync.errors import RecordError
from crmsync.records import ConsentState, OrderStatus

if TYPE_CHECKING:
    from email_validator import EmailNotValidError

MAX_TEXT = 255
_WS = re.compile(r"\s+")
_NOT_REAL_CURRENCIES = frozenset({"XXX", "XTS"})
_CURRENCIES = frozenset(list_currencies()) - _NOT_REAL_CURRENCIES

Notes = list[tuple[str, str]]  # (field, what was changed)
_V = TypeVar("_V")


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


class Memo:
    """What the costly checks found for values already seen: e-mail addresses that took the
    full validator (the fast path needs no memory) and phone numbers by their digits.

    A source keeps one for all its streams, so an order does not re-validate its
    customer's address. Each table is cleared when it reaches its limit, which bounds the
    memory however big the store (a phone entry is about 160 bytes).
    """

    EMAILS = 1 << 20
    PHONES = 1 << 18
    __slots__ = ("__weakref__", "emails", "phones")

    def __init__(self) -> None:
        self.emails: dict[str, str | EmailNotValidError] = {}  # by the validator's input
        self.phones: dict[str, dict[str, str | None]] = {}  # region -> digits -> E.164
        _MEMOS.add(self)

    def phone_table(self, region: str) -> dict[str, str | None]:
        return self.phones.setdefault(region, {})

    def clear(self) -> None:
        self.emails.clear()
        for table in self.phones.values():
            table.clear()


_MEMOS: weakref.WeakSet[Memo] = weakref.WeakSet()


def email(value: object, field: str = "email", *, memo: Memo | None = None) -> str | None:
    """Trimmed, lower-cased, syntax-checked e-mail (no DNS look-up); None when empty.

    Turkish dotted capital İ (what Turkish-locale upper-casing makes of ``i``) becomes
    ``i``. Other non-ASCII characters are refused, since the marketing tools accept ASCII
    addresses only.
    """
    if type(value) is str and (found := plain_email(value)) is not None:
        return found
    raw = text(value, field)
    if raw is None:
        return None
    candidate = _candidate(raw)  # what the validator sees: spellings differing in case share it
    checked = None if memo is None else memo.emails.get(candidate)
    if checked is None:
        checked = _validated(candidate)
        if memo is not None:
            _remember(memo.emails, candidate, checked, Memo.EMAILS)
    if isinstance(checked, str):
        return checked
    reason = f"invalid e-mail address {raw!r}: {checked}"
    raise RecordError(reason, field=field, value=raw) from checked


# A strict subset of what email_validator accepts (allow_smtputf8=False, no quoted local
# part, globally deliverable), matched on the lower-cased text: dot-atom local part;
# labels of letters and digits joined by single hyphens (so no Punycode "xn--" and no
# other "ab--" label, which the validator treats apart), each at most 63 long; a TLD of
# 2-63 letters. The special-use TLDs the validator refuses are excluded after the match.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:(?=[a-z0-9-]{1,63}\.)[a-z0-9]+(?:-[a-z0-9]+)*\.)+[a-z]{2,63}"
)
_EMAIL_MAX = 254  # the validator's limit; the full path's own 255-character cut comes later


def plain_email(value: str) -> str | None:
    """The normalised address when a cheap exact check proves ``value`` valid, else None
    (then the full validator decides). ASCII only: text() would change nothing but the
    surrounding spaces, and the validator would return the address as given."""
    stripped = value.strip()
    if len(stripped) > _EMAIL_MAX or not stripped.isascii():
        return None
    lowered = stripped.lower()
    if _PLAIN_EMAIL.fullmatch(lowered) is None or lowered.endswith(_SPECIAL_SUFFIXES):
        return None
    return lowered


# The special-use domains the validator refuses (email_validator's
# SPECIAL_USE_DOMAIN_NAMES, as 2.4 lists them), as suffixes. Kept here rather than read
# from the validator: importing it compiles its grammar (about 40 ms), which a run whose
# addresses all take the cheap path never needs. A name listed here and not there only
# sends its addresses to the full validator, which decides; tests/test_read_email.py
# checks that every name the installed validator lists is here.
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_SPECIAL_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAINS)


def _candidate(raw: str) -> str:
    return raw.replace("\u0130", "i").lower()  # İ -> i before lower() makes i̇


def _checked_email(raw: str) -> str | EmailNotValidError:
    """The full path for text()'s result: the address, or why the validator refused it."""
    return _validated(_candidate(raw))


def _validated(candidate: str) -> str | EmailNotValidError:
    """The costly part (tens of µs)."""
    import email_validator

    try:
        result = email_validator.validate_email(
            candidate, check_deliverability=False, allow_smtputf8=False
        )
    except email_validator.EmailNotValidError as exc:
        return exc.with_traceback(None)  # kept in a Memo: without the validator's frames
    return str(result.normalized).lower()


def _remember(table: dict[str, _V], key: str, value: _V, limit: int) -> _V:
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value


def phone(
    value: object, field: str = "phone", *, region: str = "TR", memo: Memo | None = None
) -> str | None:
    """E.164 phone number (+905321234567); numbers without a country code use ``region``."""
    raw = text(value, field)
    if raw is None:
        return None
    key = phone_key(raw)
    if key is None or memo is None:
        found = _e164(raw, region)
    else:
        table = memo.phone_table(region)
        if key in table:
            found = table[key]
        else:
            found = _remember(table, key, _e164(raw, region), Memo.PHONES)
    if found is None:
        raise RecordError(
            f"invalid phone number {raw!r} for region {region}", field=field, value=raw
        )
    return found


# Digits with plain punctuation and at most a leading "+": phonenumbers reads such a number
# from its digits alone (it strips the punctuation before anything else; no letters, so no
# vanity number, extension or "tel:" prefix), so every spelling shares one parse.
_PHONE_SPELLING = re.compile(r"\+?[0-9 ().\-/]*")
_PUNCTUATION = str.maketrans("", "", " ().-/+")
_PHONE_INPUT_MAX = 250  # phonenumbers refuses longer input before reading it


def phone_key(raw: str) -> str | None:
    """The digits of a plainly punctuated number (with its leading "+"), else None."""
    if len(raw) > _PHONE_INPUT_MAX or _PHONE_SPELLING.fullmatch(raw) is None:
        return None
    digits = raw.translate(_PUNCTUATION)
    if len(digits) < 3:  # phonenumbers' viability rule differs for two digits
        return None
    return "+" + digits if raw[0] == "+" else digits


def _e164(raw: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def currency(value: object, field: str = "currency") -> str:
    if type(value) is str and value in _CURRENCIES:  # a code as written: text() keeps it
        return value
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
    """Forget every remembered e-mail and phone outcome (benchmarks measure them afresh)."""
    for memo in list(_MEMOS):
        memo.clear()


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
    if fmt is None and type(value) is str and (found := iso_timestamp(value, tz)) is not None:
        return found
    return _timestamp(value, field, tz, fmt)


def _timestamp(value: object, field: str, tz: tzinfo, fmt: str | None) -> datetime | None:
    """The general path of ``timestamp``."""
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


def iso_timestamp(value: str, tz: tzinfo) -> datetime | None:
    """``timestamp`` of ISO 8601 text as exports write it (digits at both ends, a dash
    after the year, no ``Z``), read by ``fromisoformat`` as it stands: the general path
    would strip nothing, take no epoch and replace no ``Z``, so it gives the same. None
    when the general path must decide (it also words the errors)."""
    if value[4:5] != "-" or "Z" in value or not (value[:1].isdigit() and value[-1:].isdigit()):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    if not 1970 <= parsed.year <= 2200:
        return None
    return parsed.astimezone(UTC)


def birthday(value: object, field: str = "birthday", *, fmt: str | None = None) -> date | None:
    if fmt is None and type(value) is str and len(value) == 10 and value[::9].isdigit():
        # YYYY-MM-DD as it stands: strip() and [:10] of the general path change nothing
        try:
            found = date.fromisoformat(value)
        except ValueError:
            found = None
        if found is not None and 1900 <= found.year <= 2100:
            return found
    return _birthday(value, field, fmt)


def _birthday(value: object, field: str, fmt: str | None) -> date | None:
    """The general path of ``birthday``."""
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
    if type(value) is str and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()  # a code as written: text() keeps it
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
BOOLEAN_WORDS = _TRUE | _FALSE


def boolean(value: object, field: str) -> bool:
    if type(value) is str and value in BOOLEAN_WORDS:  # as written: strip, casefold keep it
        return value in _TRUE
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
    if type(value) is str and (found := _CONSENT.get(value)) is not None:
        return found  # as written: strip() and casefold() keep it
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
    if type(value) is str and (found := _STATUS.get(value)) is not None:
        return found  # as written: text() and casefold() keep it
    key = (text(value, field) or "").casefold()
    if key in _STATUS:
        return _STATUS[key]
    raise RecordError(
        f"unknown order status {value!r} (known: {', '.join(sorted(set(_STATUS)))})", field=field
    )
