"""The run's progress seam: each stage of a run says when it starts, how far it got (a
batch at a time, never per record) and when it is done; what shows that is the caller's.

Stages are named ``pull <source>.<stream>``, ``profiles`` and ``push <destination>``. A
stage's total may be known at its start (the people to plan), grow as work is handed over
(the changes queued for a destination while planning goes on), or stay unknown (a source
that cannot tell how much it holds). Calls may come from several threads at once (each
destination's sender answers on its own), so an implementation must be thread-safe.

``NoProgress`` shows nothing; ``crmsync.phase_log`` writes one log line per finished
stage; ``crmsync.progress_rich`` draws live bars on a terminal. ``Tee`` feeds several.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["PROFILES", "NoProgress", "Progress", "Tee", "pull_stage", "push_stage", "unit_of"]


class Progress(Protocol):
    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        """A stage begins; ``total``: how much it will do, when known; ``unit``: of what."""

    def grow(self, stage: str, n: int) -> None:
        """``n`` more to do than said so far (a total known piece by piece)."""

    def estimate(self, stage: str, total: int) -> None:
        """The stage's total as now estimated (a read's records, from how far into its
        input it got); it may change with each estimate."""

    def advance(self, stage: str, n: int) -> None:
        """``n`` more done."""

    def finish(self, stage: str, done: int | None = None) -> None:
        """The stage is over; ``done``: the exact count, when the advances were coarser."""

    def close(self) -> None:
        """The run (every pipeline of the command) is over: release what shows progress."""


class NoProgress:
    """Shows nothing (a test, a library call)."""

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        return None

    def grow(self, stage: str, n: int) -> None:
        return None

    def estimate(self, stage: str, total: int) -> None:
        return None

    def advance(self, stage: str, n: int) -> None:
        return None

    def finish(self, stage: str, done: int | None = None) -> None:
        return None

    def close(self) -> None:
        return None


class Tee:
    """Hands every call to each of ``parts``, in order."""

    def __init__(self, *parts: Progress) -> None:
        self.parts = parts

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        for part in self.parts:
            part.start(stage, total, unit)

    def grow(self, stage: str, n: int) -> None:
        for part in self.parts:
            part.grow(stage, n)

    def estimate(self, stage: str, total: int) -> None:
        for part in self.parts:
            part.estimate(stage, total)

    def advance(self, stage: str, n: int) -> None:
        for part in self.parts:
            part.advance(stage, n)

    def finish(self, stage: str, done: int | None = None) -> None:
        for part in self.parts:
            part.finish(stage, done)

    def close(self) -> None:
        for part in self.parts:
            part.close()


PROFILES = "profiles"


def pull_stage(source: str, stream: str) -> str:
    return f"pull {source}.{stream}"


def push_stage(destination: str) -> str:
    return f"push {destination}"


def unit_of(stage: str) -> str:
    """What a stage counts, by its name: records pulled, people planned, changes pushed."""
    if stage == PROFILES:
        return "people"
    return {"pull": "records", "push": "changes"}.get(stage.partition(" ")[0], "")
