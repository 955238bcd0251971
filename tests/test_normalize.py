"""Normalisation of raw values: times, whatever form they come in, share one range rule."""

from __future__ import annotations

from datetime import UTC, datetime

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
