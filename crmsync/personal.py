"""Personal data out of logs: e-mail addresses and phone numbers masked in free text.

A log line may say *that* a person's record was refused, never *who* it was in a form
someone reading the log could use: ``jane.doe@example.com`` becomes ``j***@e***.com`` and
``+90 532 123 45 67`` becomes ``+90*******67`` (enough to tell two apart while debugging).
Call sites that name a person use ``mask_key`` or ``mask_text``; the CLI's logging setup
(``crmsync.log_setup``) runs every record through ``mask_text`` as the last line of
defence. Masking is idempotent: a masked value is not masked again.

Phone numbers are spotted by shape: a ``+`` and 8 to 15 digits, a national number with
its leading 0 (``0532 123 45 67``, ``0 (532) 123 45 67``), or a bare run of 10 to 15
digits. The last also masks long numeric ids, which is the safe side to err on.
"""

from __future__ import annotations

import re

__all__ = ["mask_email", "mask_key", "mask_phone", "mask_text"]

_SEP = r"[ .\-]?"
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@+(?:[\w-]+\.)+[\w-]{2,}")  # @@: mistyped
_PHONE = re.compile(
    "|".join(
        (
            # international: +90 532 123 45 67, +905321234567, +1 (415) 555-0100
            rf"\+\d(?:{_SEP}\(?\d\)?){{7,14}}(?!\d)",
            # national with the trunk 0: 0532 123 45 67, 0 (532) 123 45 67, 05321234567
            rf"(?<![\w.,:+*-])0 ?\(?\d{{3}}\)?(?:{_SEP}\d){{7}}(?!\d)",
            # (415) 555-0100
            rf"(?<![\w])\(\d{{3}}\) ?\d{{3}}{_SEP}\d{{4}}(?!\d)",
            # bare digits: 5321234567 (and long ids alike)
            r"(?<![\w.,:+*-])\d{10,15}(?![\w])",
        )
    )
)
_STARS = "***"


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@e***.com``."""
    local, _, domain = email.rpartition("@")
    if not local or not domain:
        return _STARS
    name, dot, top = domain.rpartition(".")
    masked_domain = f"{name[:1]}{_STARS}{dot}{top}" if dot else f"{domain[:1]}{_STARS}"
    return f"{local[:1]}{_STARS}@{masked_domain}"


def mask_phone(phone: str) -> str:
    """``+90 532 123 45 67`` -> ``+90*******67``: the first two digits (the country code
    of a number with ``+``) and the last two; a star for every digit between."""
    digits = "".join(c for c in phone if c.isdigit())
    plus = "+" if phone.lstrip().startswith("+") else ""
    if len(digits) < 6:
        return plus + "*" * len(digits)
    return f"{plus}{digits[:2]}{'*' * (len(digits) - 4)}{digits[-2:]}"


def mask_text(text: str) -> str:
    """``text`` with every e-mail address and phone number in it masked."""
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def mask_key(person_key: str) -> str:
    """A person key (``e:<e-mail>``, ``p:<phone>``, ``s:<source>:<id>``) fit for a log."""
    kind, _, value = person_key.partition(":")
    if kind == "e":
        return f"e:{mask_email(value)}"
    if kind == "p":
        return f"p:{mask_phone(value)}"
    return mask_text(person_key)
