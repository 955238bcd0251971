"""Normalisation of raw values: times, whatever form they come in, share one range rule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmsync import normalize
from crmsync.errors import RecordError


@pytest.mark.parametrize(
    "value",
    [
        "1741064767",
        1741064767,
        1741064767000,
        "2025-03-04T05:06:07Z",
        "2025-03-04T08:06:07+03:00",
    ],
)
def test_epoch_seconds_milliseconds_and_iso_text_give_the_same_instant(value: object) -> None:
    assert normalize.timestamp(value, "at") == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "value", [-5, "2300-01-01T00:00:00Z", 99_999_999_999, "99999999999", 10**30, 1e300]
)
def test_times_outside_1970_to_2200_are_refused_in_every_form(value: object) -> None:
    with pytest.raises(RecordError, match="out of range") as raised:
        normalize.timestamp(value, "placed_at")
    assert raised.value.field == "placed_at"


# --- exact fast paths: values as exports write them skip work, and give the same -------


def _outcome(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except RecordError as exc:
        return ("error", exc.reason, exc.field)


def _times() -> list[str]:
    fixed = [
        "2025-03-04T05:06:07+03:00", "2025-03-04T05:06:07Z", "2025-03-04T05:06:07", "2025-03-04",
        "2025-03-04 05:06:07+0300", "2025-03-04T05:06:07.123456-05:30", "20250304T050607",
        "1741064767", "1741064767000", " 2025-03-04T05:06:07+03:00", "2025-03-04T05:06:07+03:00 ",
        "1969-12-31T23:59:59+00:00", "2201-01-01T00:00:00+00:00", "2200-12-31T23:00:00-05:00",
        "2026-02-30T10:15:00+03:00", "31.02.2026 25:61", "0000-00-00 00:00:00", "dün akşam",
        "2025-13-01T00:00:00", "٢٠٢٥-03-04T05:06:07", "2025-03-04T05:06:07+03:00Z", "2025-W10-2",
        "2025-03-04T24:00:00", "", " ", "2025", "2025-03-04T05:06:07+25:00",
    ]  # fmt: skip
    rng = random.Random(4)
    pieces = ["2025", "-", "03", "04", "T", " ", ":", "05", "+03:00", "Z", "9", ".5", "1970"]
    fixed += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    zones = [UTC, ZoneInfo("Europe/Istanbul"), ZoneInfo("America/St_Johns"), None]
    for _ in range(500):  # real times as exports write them, some beyond the range's ends
        moment = datetime.fromtimestamp(rng.uniform(-2e9, 7.3e9), UTC)
        zone = rng.choice(zones)
        separator = rng.choice([" ", "T"])
        if zone is None:  # naive: read in the source's zone
            fixed.append(moment.replace(tzinfo=None).isoformat(separator))
        else:
            fixed.append(moment.astimezone(zone).isoformat(separator))
    return fixed


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("Europe/Istanbul")])
def test_the_iso_fast_path_gives_what_the_general_path_gives(tz: tzinfo) -> None:
    taken = 0
    for value in _times():
        general = _outcome(normalize._timestamp, value, "at", tz, None)
        assert _outcome(normalize.timestamp, value, "at", tz=tz) == general, value
        if normalize.iso_timestamp(value, tz) is not None:
            taken += 1
            assert normalize.iso_timestamp(value, tz) == general, value
    assert taken > 50


def test_the_birthday_fast_path_gives_what_the_general_path_gives() -> None:
    rng = random.Random(5)
    values = ["1988-10-26", "1899-12-31", "2101-01-01", "1988-02-30", "19881026", " 988-10-26"]
    values += ["1988-10-26T10:00", "1988-10-2 ", "1988-W43-1", "٢٠٢٥-03-04", "", "26.10.1988"]
    values += ["".join(rng.choice("0123456789-W ") for _ in range(10)) for _ in range(3000)]
    for value in values:
        assert _outcome(normalize.birthday, value, "birthday") == _outcome(
            normalize._birthday, value, "birthday", None
        ), value


def test_lookup_fast_paths_only_take_values_the_general_path_would_spell_alike() -> None:
    """currency, order status, consent and true/false look a value up as written; the
    general path trims and folds it first, so every key must already be trimmed and folded."""
    for code in normalize._CURRENCIES:
        assert (normalize.text(code, "c", limit=8) or "").upper() == code
    for status in normalize._STATUS:
        assert (normalize.text(status, "s") or "").casefold() == status
    for word in [*normalize._CONSENT, *normalize.BOOLEAN_WORDS]:
        assert word.strip().casefold() == word
    assert normalize.country("tr") == normalize.country(" Tr ") == "TR"
    assert normalize.consent_state(" YES ", "c") is normalize.consent_state("yes", "c")
    assert normalize.boolean(" Evet ", "b") is normalize.boolean("evet", "b") is True
