"""An exact fast path for phone numbers of the source's own region.

``phonenumbers.parse`` plus ``is_valid_number`` costs tens of µs a number, most of it
generic work (punctuation, extensions, international prefixes, country-code guessing)
that a plainly written national number never needs. For the three spellings exports
use, written as digits (``normalize.phone_key``), this module follows what
phonenumbers does to them, with the region's own metadata, and answers only where
every branch is certain:

- ``+<cc><n>``: the region's own country code (a region that is its code's only one);
- ``<national prefix><n>``: ``n`` a full national number, so the prefix is stripped;
- ``<n>``: no national prefix, no international prefix, no leading country code.

In each, ``n`` must not start with 0 (phonenumbers keeps such zeros apart) and the
answer is ``+<cc><n>`` when ``n`` matches the region's general pattern and one of its
number types, as ``is_valid_number`` checks. Anything else (another country code, an
invalid number, a region whose metadata rewrites prefixes) returns None and goes to
phonenumbers itself. ``tests/test_read_phones.py`` compares the two over the sample
store and random numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

# Limits of a national significant number in phonenumbers.parse
_MIN_NSN, _MAX_NSN = 2, 17
# The number types whose patterns make a number valid (is_valid_number: any of them), the
# common ones first; mobile counts only when its pattern is not the fixed lines' one.
_TYPES = (
    "mobile", "fixed_line", "premium_rate", "toll_free", "shared_cost", "voip",
    "personal_number", "pager", "uan", "voicemail",
)  # fmt: skip

Pattern = tuple[frozenset[int], re.Pattern[str]]  # possible lengths (empty: any), pattern


def _pattern(desc: object) -> Pattern | None:
    if desc is None:
        return None
    national = getattr(desc, "national_number_pattern", None)
    if not national:
        return None
    return frozenset(getattr(desc, "possible_length", ()) or ()), re.compile(national)


def _matches(number: str, pattern: Pattern) -> bool:
    lengths, compiled = pattern
    return (not lengths or len(number) in lengths) and compiled.fullmatch(number) is not None


@dataclass(frozen=True, slots=True)
class RegionPhones:
    code: str  # the country calling code, as digits
    national_prefix: str  # digits, or "" for a region without one
    international: re.Pattern[str]
    general: Pattern
    types: tuple[Pattern, ...]

    def e164(self, key: str) -> str | None:
        """The E.164 form of a valid number given as ``phone_key`` digits, or None when
        phonenumbers must decide (including every number it would call invalid)."""
        if key[0] == "+":
            digits = key[1:]
            if not digits.startswith(self.code):
                return None
            number = digits[len(self.code) :]
            if self.national_prefix and number.startswith(self.national_prefix):
                return None  # phonenumbers would try to strip it
        elif self.international.match(key) or key.startswith(self.code):
            return None  # an international prefix, or a country code written without "+"
        elif self.national_prefix and key.startswith(self.national_prefix):
            number = key[len(self.national_prefix) :]
            if not _matches(number, self.general):
                return None  # phonenumbers may keep the prefix: it decides
        else:
            number = key
        if not _MIN_NSN <= len(number) <= _MAX_NSN or number[0] == "0":
            return None
        if not _matches(number, self.general):
            return None
        if not any(_matches(number, pattern) for pattern in self.types):
            return None
        return f"+{self.code}{number}"


@lru_cache(maxsize=64)
def region_phones(region: str) -> RegionPhones | None:
    """The fast path of ``region``, or None where its metadata falls outside what the fast
    path follows (a shared country code, a prefix rewrite, a national prefix pattern)."""
    metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
    if metadata is None or metadata.country_code is None:
        return None
    code = str(metadata.country_code)
    if COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code) != (region.upper(),):
        return None
    if any(int(code[:end]) in COUNTRY_CODE_TO_REGION_CODE for end in range(1, len(code))):
        return None  # another code is a prefix of this one: parse could read that
    prefix = metadata.national_prefix_for_parsing or ""
    if (prefix and not prefix.isdigit()) or metadata.national_prefix_transform_rule:
        return None
    general = _pattern(metadata.general_desc)
    if general is None or not metadata.international_prefix:
        return None
    same = metadata.same_mobile_and_fixed_line_pattern
    names = [name for name in _TYPES if not (same and name == "mobile")]
    found = [_pattern(getattr(metadata, name, None)) for name in names]
    types = tuple(pattern for pattern in found if pattern is not None)
    international = re.compile(metadata.international_prefix)
    return RegionPhones(code, prefix, international, general, types)
