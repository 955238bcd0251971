"""The values of one pipeline run: what the caller asks for and what the run reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmsync.errors import CrmsyncError
from crmsync.not_synced import Summary
from crmsync.phase_log import PhaseLog
from crmsync.progress import Progress
from crmsync.stopwatch import Stopwatch

SIGINT_REASON = "interrupted by SIGINT (Ctrl-C)"


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (``crmsync.stopping``): a ``KeyboardInterrupt``, so
    that everything that already unwinds cleanly on Ctrl-C does so for SIGTERM too, with
    the reason the run records and the exit code the command ends with."""

    def __init__(self, reason: str, exit_code: int) -> None:
        super().__init__(reason)
        self.reason, self.exit_code = reason, exit_code


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption ``exc`` is or hides, else None.

    A signal's ``Interrupted`` (``crmsync.stopping``) is raised wherever the main thread
    is, and may land inside a lock's bookkeeping: in ``Condition.wait`` (a full queue's
    ``put``) right after the lock was let go, when leaving the ``with`` block then
    releases it again and raises ``RuntimeError: release unlocked lock`` in its place.
    That error hides the interruption as its context; the run is interrupted all the same.
    """
    if isinstance(exc, KeyboardInterrupt):
        return exc
    context = exc.__context__
    if isinstance(exc, RuntimeError) and isinstance(context, KeyboardInterrupt):
        return context
    return None


def describe_error(exc: BaseException) -> str:
    """What a run or a task that failed on ``exc`` records: crmsync's own errors say it
    in their message, anything else is named by its class too."""
    return str(exc) if isinstance(exc, CrmsyncError) else f"{exc.__class__.__name__}: {exc}"


def interrupt_reason(exc: KeyboardInterrupt) -> str:
    """What stopped the run, for its record and the one line the command prints (a bare
    ``KeyboardInterrupt`` is Python's own answer to Ctrl-C)."""
    return exc.reason if isinstance(exc, Interrupted) else SIGINT_REASON


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report it: 130 for SIGINT, 143 for SIGTERM."""
    return exc.exit_code if isinstance(exc, Interrupted) else 130


@dataclass
class RunOptions:
    kind: str = "manual"  # manual | scheduled | backfill
    as_of: datetime | None = None
    dry_run: bool = False  # `plan`: compute everything, push and record nothing
    pull: bool = True
    full: bool = False  # backfill --full
    since: datetime | None = None  # backfill --since
    samples: int = 5
    not_synced: int = 10  # records named per reason not synced in the report (all are stored)
    progress: Progress = field(default_factory=PhaseLog)  # per stage, a batch at a time
    job_wait_seconds: float = 300.0  # at the end of a run, how long to wait for pending jobs
    # backfill --events: also re-derive the events of records since ``since``, historical
    events: bool = False


def jobs_left(destination: str, running: int, waited: float) -> str:
    """The run's warning for a destination's jobs still running when its wait ended."""
    return (
        f"{destination}: {running} jobs still running after a wait of {waited:g} s;"
        " the next run collects their results"
    )


@dataclass
class DestinationReport:
    name: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)  # decisions and push results
    decisions: Counter[str] = field(default_factory=Counter)  # one per profile: adds up
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # the destination could take no more (``SendLater``, NOT_SENT): nothing failed, and
    # what it did not take waits for a later run; ``error`` says why and until when
    full: bool = False


@dataclass
class EventReport:
    """One destination's events in a run: what was handed to it and what it answered
    (``ok``, ``failed``, ``rejected``, ``compliance``, ``not_sent``), what it had already
    (``already_sent``) or must wait for (``waiting``: a retry not yet due, or refused),
    and the acknowledged ones per kind."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # acknowledged, per event kind
    error: str | None = None
    full: bool = False  # could take no more: the rest waits for a later run

    def as_dict(self) -> dict[str, Any]:
        return {**dict(self.counts), "kinds": dict(self.kinds)}


@dataclass
class RunReport:
    pipeline: str
    run_id: int | None
    kind: str
    dry_run: bool
    as_of: datetime
    status: str = "running"
    pulled: dict[str, dict[str, int]] = field(default_factory=dict)
    profiles: int = 0  # every person of the pipeline: recomputed + kept
    profiles_kept: int = 0  # people not recomputed: their last plan still holds
    planning: str = ""  # "incremental", or why everyone was planned
    segments: Counter[str] = field(default_factory=Counter)
    destinations: dict[str, DestinationReport] = field(default_factory=dict)
    consent_read: dict[str, int] = field(default_factory=dict)
    not_synced: Summary | None = None  # records left out, per reason (None: not planned)
    events: dict[str, EventReport] = field(default_factory=dict)  # per destination taking them
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    stages: Stopwatch = field(default_factory=Stopwatch)  # seconds per stage of this run

    def ended_by(self, exc: BaseException) -> BaseException:
        """Records the run as ended by ``exc``: interrupted, with the reason, when it is
        or hides an interruption (``interruption``), else failed with what was raised.
        Returns what the run raises: the interruption itself when an error hid it, so
        the command ends as interrupted (130 or 143)."""
        stopped = interruption(exc)  # Ctrl-C, or SIGTERM (``crmsync.stopping``)
        if stopped is not None:
            self.status, self.error = "interrupted", interrupt_reason(stopped)
            return stopped
        self.status, self.error = "failed", describe_error(exc)
        return exc

    def counts(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "profiles": self.profiles,
            "profiles_kept": self.profiles_kept,
            "planning": self.planning,
            "people": {n: dict(d.decisions) for n, d in self.destinations.items()},
            "segments": dict(self.segments),
            "consent_read": self.consent_read,
            "destinations": {n: dict(d.counts) for n, d in self.destinations.items()},
            "not_synced": dict(self.not_synced.counts) if self.not_synced else {},
            "events": {n: e.as_dict() for n, e in self.events.items()},
            "warnings": self.warnings,
            "seconds": self.stages.as_dict(),
        }
