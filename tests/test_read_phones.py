"""Phone numbers: the digits key and the region fast path give what phonenumbers gives.

``normalize.phone_key`` lets every punctuation of one number share one parse, and
``connectors.records.phones`` answers plainly written national numbers without
phonenumbers at all; both must agree with ``phonenumbers.parse`` + ``is_valid_number``
on the raw text, over the sample store's numbers in every spelling and random digits.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import phonenumbers
import pytest

from connectors.records import MappingContext
from connectors.records.fields import CUSTOMER
from connectors.records.phones import region_phones
from connectors.records.spec import FieldSpec
from crmsync import normalize
from crmsync.errors import RecordError
from crmsync.sample import SampleSpec, items
from crmsync.sample.export import render


def parsed(raw: str, region: str) -> str | None:
    """phonenumbers on the text as written: what normalize.phone has always returned."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def spellings(digits: str, code: str) -> Iterator[str]:
    """One number written the ways exports write numbers, and a few they should not."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    yield from (digits, f"0{digits}", f"+{code}{digits}", f"{code}{digits}", f"00{code}{digits}")
    yield from (f"+{digits}", f"00{digits}", f"0 ({a}) {b} {c}", f"+{code} {a} {b}{c}")
    yield from (f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"{a}/{b}{c}", f"0{a} {b} {c[:2]} {c[2:]}")
    yield from (f"+{code}0{digits}", f"0 0{digits}", f"+ {code} {digits}", f"({a}){b}{c}")


def random_numbers(seed: int, count: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        length = rng.choice((5, 7, 8, 9, 10, 10, 10, 11, 12, 13))
        first = rng.choice("0123456789" if rng.random() < 0.3 else "23458")
        yield first + "".join(rng.choice("0123456789") for _ in range(length - 1))


def sample_phones() -> list[str]:
    found = []
    for item in items(SampleSpec(customers=3000, dirty_rate=0.2, seed=9)):
        row = item.raw if item.raw is not None else render(item)
        if row.get("phone"):
            found.append(str(row["phone"]))
    return found


# with their codes; GB (+44 also Jersey...) and US (+1) share theirs, BR rewrites prefixes
REGIONS = {
    "TR": "90",
    "DE": "49",
    "FR": "33",
    "ES": "34",
    "MX": "52",
    "GB": "44",
    "US": "1",
    "BR": "55",
}
NO_FAST_PATH = {"GB", "US", "BR"}


def test_every_spelling_of_a_number_parses_like_its_digits_key() -> None:
    cases = sample_phones()
    for number in random_numbers(1, 1500):
        cases.extend(spellings(number, "90"))
    cases += ["12", "1 2", "+1", "+12", "0 532 ext 1", "0532x12", "tel:+905321234567", "(+90)532"]
    keyed = 0
    for raw in cases:
        key = normalize.phone_key(raw)
        if key is not None:
            keyed += 1
            assert parsed(key, "TR") == parsed(raw, "TR"), (raw, key)
    assert keyed > 0.9 * len(cases)


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_the_region_fast_path_answers_only_as_phonenumbers_would(region: str) -> None:
    fast = region_phones(region)
    assert (fast is None) == (region in NO_FAST_PATH)
    if fast is None:
        return
    cases = sample_phones() if region == "TR" else []
    for number in random_numbers(sum(map(ord, region)), 1500):
        cases.extend(spellings(number, REGIONS[region]))
    answered = 0
    for raw in cases:
        key = normalize.phone_key(raw)
        found = fast.e164(key) if key is not None else None
        if found is not None:
            answered += 1
            assert found == parsed(raw, region), raw
    assert answered > 100


def test_the_fast_path_answers_the_sample_store() -> None:
    fast = region_phones("TR")
    assert fast is not None
    phones = sample_phones()
    answered = [p for p in phones if (k := normalize.phone_key(p)) and fast.e164(k)]
    assert len(answered) > 0.99 * len(phones)


def test_a_number_is_parsed_once_whatever_its_punctuation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = normalize._e164

    def counted(raw: str, region: str) -> str | None:
        calls.append(raw)
        return real(raw, region)

    monkeypatch.setattr(normalize, "_e164", counted)
    memo = normalize.Memo()
    spelled = ["0532 123 45 67", "05321234567", "0 (532) 123 45 67", "0532-123-45-67"]
    assert {normalize.phone(raw, memo=memo) for raw in spelled} == {"+905321234567"}
    assert calls == ["0532 123 45 67"]
    with pytest.raises(RecordError, match="invalid phone number '0532 12' for region TR"):
        normalize.phone("0532 12", memo=memo)
    with pytest.raises(RecordError, match="invalid phone number '053212' for region TR"):
        normalize.phone("053212", memo=memo)  # remembered invalid, worded for its own text
    assert len(calls) == 2


def test_the_phone_field_clears_an_invalid_number_with_the_same_note() -> None:
    convert = CUSTOMER["phone"].factory(FieldSpec(path="phone"), MappingContext(), "phone")
    assert convert(" +90 532 123 45 67 ", []) == "+905321234567"
    with pytest.raises(RecordError, match="invalid phone number '0532 123' for region TR"):
        convert("0532 123", [])
