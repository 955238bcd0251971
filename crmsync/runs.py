"""The values of one pipeline run: what the caller asks for and what the run reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class RunOptions:
    kind: str = "manual"  # manual | scheduled | backfill
    as_of: datetime | None = None
    dry_run: bool = False  # `plan`: compute everything, push and record nothing
    pull: bool = True
    full: bool = False  # backfill --full
    since: datetime | None = None  # backfill --since
    samples: int = 5
    progress: Callable[[str, int], None] | None = None  # (phase, n) after each batch
    job_wait_seconds: float = 300.0  # at the end of a run, how long to wait for pending jobs


@dataclass
class DestinationReport:
    name: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class RunReport:
    pipeline: str
    run_id: int | None
    kind: str
    dry_run: bool
    as_of: datetime
    status: str = "running"
    pulled: dict[str, dict[str, int]] = field(default_factory=dict)
    profiles: int = 0
    segments: Counter[str] = field(default_factory=Counter)
    destinations: dict[str, DestinationReport] = field(default_factory=dict)
    consent_read: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def counts(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "profiles": self.profiles,
            "segments": dict(self.segments),
            "consent_read": self.consent_read,
            "destinations": {n: dict(d.counts) for n, d in self.destinations.items()},
            "warnings": self.warnings,
        }
