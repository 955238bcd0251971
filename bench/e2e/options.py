"""What one bench invocation is asked for, and the names every module shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout
RUNS = ("first", "no_change", "changed")
ENGINES = ("sqlite", "postgresql")
# the fake vendors a bench pushes to (bench.e2e.vendors), each by its name in the bench's
# configuration, which the run's report keys its counts and stages by
CONFIG_NAMES = {"mailchimp": "mc", "klaviyo": "kl", "hubspot": "hs"}
DESTINATIONS = tuple(CONFIG_NAMES)
CDNOW = "cdnow"  # the --sizes token of the CDNOW store (bench.e2e.cdnow) beside numbers
Size: TypeAlias = int | str  # customers of a generated store, or CDNOW


def parse_size(token: str) -> Size:
    """``10000`` -> 10000, ``cdnow`` -> "cdnow"; anything else is refused (ValueError)."""
    token = token.strip()
    return CDNOW if token.lower() == CDNOW else int(token)


def size_label(size: Size) -> str:
    """How the table names a size: ``10,000``, ``cdnow``."""
    return f"{size:,}" if isinstance(size, int) else size


@dataclass(frozen=True)
class Options:
    latency: float = 0.08  # seconds per fake Mailchimp call
    connections: int = 10  # requests in flight, for crmsync and the per-contact method alike
    work: Path = ROOT / "var" / "bench"
    per_contact_sizes: frozenset[int] = frozenset({10_000})
    keep: bool = False
    source: Path | None = None  # run crmsync from this tree (e.g. an older commit's archive)
    workers: tuple[int, ...] = (0,)  # 0: in one process; N: on N Celery workers
    broker: str = "redis"  # the workers' broker: "redis" or "amqp" (bench.e2e.workers)
    destination: str = "mailchimp"  # the fake vendor the runs push to (DESTINATIONS)
    # before each run after the first, wait until the earlier runs' calls left the vendor's
    # rate windows (Klaviyo and HubSpot), so each run meets the limits afresh, as its time
    # floor assumes; the tests' tiny runs come nowhere near the limits and skip the wait
    settle: bool = True


def key_prefix(engine: str, size: Size, workers: int = 0, destination: str = "mailchimp") -> str:
    """Where a configuration's figures go in the results: ``<engine>.<size>.`` for
    Mailchimp (its keys from before other destinations), ``<engine>.<size>.<destination>.``
    for the others, then ``w<N>.`` on N workers."""
    vendor = "" if destination == "mailchimp" else f"{destination}."
    return f"{engine}.{size}.{vendor}{f'w{workers}.' if workers else ''}"
