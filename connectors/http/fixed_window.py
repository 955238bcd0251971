"""A vendor window that resets at fixed moments, kept from the vendor's own answers.

Klaviyo counts each endpoint group's calls in fixed windows (a second and a minute) that
reset at moments of its own, and every answer says where the minute stands:
``RateLimit-Limit`` (the window's size), ``RateLimit-Remaining`` and ``RateLimit-Reset``
(whole seconds until it resets). A client that keeps such a window as a rolling one never
overfills it, but after a quiet start it waits a whole minute from its first call where
the vendor would take the next window's calls as soon as the current one resets: a first
sync whose look-ups begin 20 seconds into a minute gets 750 of them in 40 seconds, then
waits 60 seconds from the first one instead of 20.

``FixedWindow`` is the bookkeeping for one such window, under the budget's lock: until an
answer has said when the window ends, the budget keeps it as a rolling window; from then
on each try is placed in a window of its own: at most ``size`` start between two resets,
none in the last ``closing`` seconds before a reset (the reset is known to a whole second
and the try must reach the vendor before it) nor in the first ``margin`` after one. The
end is the earliest any answer in that window put it at (``now + reset`` is never before
it); the next window is first placed ``seconds`` later and moved later by its own first
answer when that says so beyond its second of rounding, so two clocks that drift apart
never put it more than that second early, however long the process lives; and an
answer's remaining count raises the window's count to what the vendor has seen (other
clients of the account included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import httpx

from connectors.http.classify import rate_limit_limit, rate_limit_reset

ROUNDING = 1.0  # ``RateLimit-Reset`` is whole seconds: the true end may be this much earlier


class FixedWindow:
    """At most ``size`` tries between two of the vendor's resets, ``seconds`` apart."""

    def __init__(self, size: int, seconds: float, margin: float) -> None:
        self.size = max(1, size)
        self.seconds = seconds
        self.margin = max(0.0, margin)
        self.closing = ROUNDING + self.margin
        self.end: float | None = None  # the current window's end on the budget's clock
        self.used = 0  # tries placed in the current window (or the vendor's count, if more)
        self._told = False  # an answer in the current window has set its end

    def learn(
        self, now: float, reset: float, remaining: float | None, starts: Iterable[float]
    ) -> None:
        """An answer read at ``now`` said the window resets in ``reset`` seconds with
        ``remaining`` calls left; ``starts``: the tries started so far (for the first
        answer, the ones already in its window)."""
        if reset > self.seconds + ROUNDING:
            return  # a longer window's (a day's) state: nothing to learn of this one
        end = now + reset
        if self.end is None:
            self.end = end
            self.used = sum(1 for start in starts if start >= end - self.seconds)
        elif abs(end - self.end) < self.seconds / 2:
            # the first answer of a window placed by extrapolation may move it later, by
            # as much as the whole second of rounding leaves sure; the others narrow it
            self.end = min(end, self.end if self._told else max(self.end, end - ROUNDING))
        else:
            return  # a window before or after the one being filled: nothing to learn
        self._told = True
        if remaining is not None:
            self.used = max(self.used, self.size - int(remaining))

    def place(self, start: float) -> float:
        """Books one try at ``start`` or later (the window has an end); returns when."""
        assert self.end is not None, "place() before an answer told the window's end"
        while start > self.end - self.closing:
            self._next()
        if self.used >= self.size:
            self._next()
        self.used += 1
        return max(start, self.end - self.seconds + self.margin)

    def _next(self) -> None:
        self.end = (self.end or 0.0) + self.seconds
        self.used, self._told = 0, False


class KeptWindow(Protocol):
    @property
    def size(self) -> int:
        """Calls the window holds."""
        ...


W = TypeVar("W", bound=KeptWindow)


def stated(response: httpx.Response, windows: Iterable[W]) -> Iterator[tuple[W, float]]:
    """Each kept window whose size an answer states (``RateLimit-Limit``), with the seconds
    until it resets (``RateLimit-Reset``): what a kept fixed window learns from
    (``FixedWindow.learn``). Nothing when the answer does not state both."""
    limit, reset = rate_limit_limit(response), rate_limit_reset(response)
    if limit is None or reset is None:
        return
    for window in windows:
        if window.size == limit:
            yield window, reset
