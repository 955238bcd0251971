"""Drops rows outside an incremental read's window before any record work is done on them.

An incremental read of a large export keeps about 1 % of its rows. The full path
(``files._Window``) turns every row's ``updated_at`` into an aware datetime, after the
row was wrapped for the builder, only to drop the other 99 %. This prefilter answers
"outside the window" or "not sure" from the row's raw value (the parsed JSON line's
string, the CSV cell) by comparing text, and "not sure" sends the row the full path: what
a read yields is the same either way.

JSON lines are still parsed by orjson first, on purpose: a malformed line is reported by
the full path whatever its ``updated_at`` says, so only a line orjson reads may be
dropped, and orjson is the cheapest exact judge of that (a second parser that builds
nothing took as long once the numbers it reads differently from orjson were screened).

It says "outside" only when the row's value is a string ``YYYY-MM-DDTHH:MM:SS[.ffffff]``
(``T`` or a space in the middle) with an offset ``Z``, ``±HH:MM``, ``±HHMM`` or ``±HH``, a
real date and time in the years the full path accepts (a time without an offset is read
in the source's zone: left to the full path), and its second lies wholly before
``since`` or after ``until``. That is decided on the text: the bounds are rendered in
the row's own offset (once per offset), where text order is time order, and each day's
verdict is remembered; the same second as a bound is "not sure".
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from connectors.files_config import StreamFile
from connectors.records.paths import plain_key

# the full path's range of years (normalize.timestamp): outside it the row is quarantined
_FIRST_YEAR, _LAST_YEAR = 1970, 2200
_TWO_DIGITS = [f"{n:02d}" for n in range(60)]
_HOURS, _MINUTES = frozenset(_TWO_DIGITS[:24]), frozenset(_TWO_DIGITS)
_CLOCK = frozenset(f":{m}:{s}" for m in _TWO_DIGITS for s in _TWO_DIGITS)  # :MM:SS
_T_HOURS = frozenset(f"{sep}{h}" for sep in "T " for h in _TWO_DIGITS[:24])  # THH or " HH"
_DAY, _STAMP = len("2026-01-02"), len("2026-01-02T03:04:05")
_HOUR, _USUAL = len("2026-01-02T03"), len("2026-01-02T03:04:05+03:00")
_CACHED = 100_000  # verdicts (and offsets) remembered; past that they are judged afresh
# a day's verdict against the window, in one offset
_BEFORE, _AFTER, _EDGE, _INSIDE, _INVALID = range(5)


class WindowPrefilter:
    """The "outside (since, until]" test of one incremental read of one stream."""

    def __init__(self, column: str, since: datetime, until: datetime) -> None:
        self.column = column
        self.since, self.until = since, until
        self._zones: dict[str, tuple[str, str] | None] = {}  # offset -> bounds as text
        self._days: dict[str, int] = {}  # YYYY-MM-DD and offset -> verdict

    def row_outside(self, row: dict[str, Any]) -> bool:
        """Whether the full path would drop this parsed JSON row as outside the window
        (``outside`` of its value, the usual case inlined: it runs on every row)."""
        value = row.get(self.column)
        if type(value) is not str:
            return False
        if len(value) == _USUAL:
            found = self._days.get(value[:_DAY] + value[_STAMP:])
            if found is not None and found <= _AFTER:
                return value[_DAY:_HOUR] in _T_HOURS and value[_HOUR:_STAMP] in _CLOCK
        return self._outside(value)

    def outside(self, value: str) -> bool:
        """Whether the full path reads ``value`` (a JSON string or CSV cell) as a time
        wholly before ``since`` or after ``until``; False when not sure."""
        if len(value) == _USUAL:  # YYYY-MM-DDTHH:MM:SS+03:00 on a day judged already
            found = self._days.get(value[:_DAY] + value[_STAMP:])
            if found is not None and found <= _AFTER:
                return value[_DAY:_HOUR] in _T_HOURS and value[_HOUR:_STAMP] in _CLOCK
        return self._outside(value)

    def _outside(self, value: str) -> bool:
        """``outside`` in full: any layout, a day not seen yet, a bound's day."""
        rest = value[_STAMP:]  # [.ffffff] and the offset
        split = len(rest) - 1 if rest[-1:] == "Z" else max(rest.rfind("+"), rest.rfind("-"))
        if split < 0:
            return False  # no offset: the source's zone decides
        offset = rest[split:]
        if split and not _fraction(rest[:split]):
            return False
        key = value[:_DAY] + offset
        found = self._days.get(key)
        if found is None:
            found = self._verdict(value[:_DAY], offset, key)
        if found > _EDGE or value[_DAY:_HOUR] not in _T_HOURS:
            return False
        if value[_HOUR:_STAMP] not in _CLOCK:
            return False
        if found == _EDGE:
            first, last = self._bounds(offset) or ("", "")  # known: the day has a bound
            stamp = f"{value[:_DAY]}T{value[_DAY + 1 : _STAMP]}"  # T, as the bounds have
            return stamp < first or stamp > last
        return True

    def _verdict(self, day: str, offset: str, key: str) -> int:
        """Where ``YYYY-MM-DD`` in ``offset`` lies: wholly before or after the window, on
        the day of one of its bounds, inside; or not a date the full path reads."""
        bounds = self._bounds(offset)
        if bounds is None or not _real_date(day):
            found = _INVALID
        elif day < bounds[0][:_DAY]:
            found = _BEFORE
        elif day > bounds[1][:_DAY]:
            found = _AFTER
        elif day in (bounds[0][:_DAY], bounds[1][:_DAY]):
            found = _EDGE
        else:
            found = _INSIDE
        if len(self._days) < _CACHED:
            self._days[key] = found
        return found

    def _bounds(self, offset: str) -> tuple[str, str] | None:
        """``since`` and ``until`` as ``YYYY-MM-DDTHH:MM:SS`` in this offset (the second
        each falls in), or None for an offset not written as Z, ±HH:MM, ±HHMM or ±HH."""
        try:
            return self._zones[offset]
        except KeyError:
            bounds = self._render(offset)
        if len(self._zones) < _CACHED:  # a file of odd values does not fill memory
            self._zones[offset] = bounds
        return bounds

    def _render(self, offset: str) -> tuple[str, str] | None:
        if offset == "Z":
            zone: tzinfo = UTC
        else:
            sign, hours, minutes = offset[:1], offset[1:3], offset[3:].removeprefix(":")
            if len(offset) == 3:
                minutes = "00"  # ±HH
            elif len(offset) != (6 if offset[3:4] == ":" else 5):  # ±HH:MM, ±HHMM
                return None
            if sign not in ("+", "-") or hours not in _HOURS or minutes not in _MINUTES:
                return None
            delta = timedelta(hours=int(hours), minutes=int(minutes))
            zone = timezone(-delta if sign == "-" else delta)
        try:
            first = self.since.astimezone(zone).isoformat()[:_STAMP]
            last = self.until.astimezone(zone).isoformat()[:_STAMP]
        except (OverflowError, ValueError):
            return None
        return first, last


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # not other scripts' digits


def _fraction(text: str) -> bool:
    """``.`` and one to six digits: fractions the full path reads as written."""
    return text[:1] == "." and 2 <= len(text) <= 7 and _digits(text[1:])


def _real_date(text: str) -> bool:
    """``YYYY-MM-DD``, a real date in the years the full path accepts."""
    if len(text) != 10 or text[4:5] != "-" or text[7:8] != "-":
        return False
    if not _digits(text[:4] + text[5:7] + text[8:]):
        return False
    try:
        found = date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return False
    return _FIRST_YEAR <= found.year <= _LAST_YEAR


def prefilter(spec: StreamFile, since: datetime | None, until: datetime) -> WindowPrefilter | None:
    """The prefilter of an incremental read of ``spec``, or None where it cannot be exact
    or would not pay: a read from scratch (no ``since``: every row is read anyway), no
    ``updated_at`` column or one reached through a path, a ``date_format`` (epoch
    included) configured, bounds without a zone."""
    column = spec.updated_at
    if since is None or not column or spec.date_format:
        return None
    if since.tzinfo is None or until.tzinfo is None:
        return None
    if plain_key(column, flat=spec.file_format() == "csv") != column:
        return None
    return WindowPrefilter(column, since, until)
