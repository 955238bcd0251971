"""The benchmark results file: each benchmark merges its figures under its own name."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(os.environ.get("CRMSYNC_BENCH_RESULTS", Path(__file__).parent / "results.json"))

Figure = float | int | str


def python_speed() -> float:
    """Seconds this machine takes for a fixed piece of pure-Python work (string, dict and
    integer operations, one core), the best of five: the same code ran 2.7 x slower on
    one session's machine than on another's, so a figure in seconds is read beside the
    speed of the machine it was measured on (divide both sides of a comparison by it)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        counts: dict[str, int] = {}
        for number in range(200_000):
            key = f"k{number % 997}"
            counts[key] = counts.get(key, 0) + number
        best = min(best, time.perf_counter() - started)
    return round(best, 4)


def record(name: str, figures: dict[str, Figure]) -> Path:
    """Merges ``figures`` into the results file under ``name``, with when and where."""
    data: dict[str, object] = {}
    if RESULTS.exists():
        data = json.loads(RESULTS.read_text(encoding="utf-8"))
    data[name] = {
        **figures,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu, "
        f"Python {platform.python_version()}",
        "python_speed_s": python_speed(),
    }
    temporary = RESULTS.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(RESULTS)
    return RESULTS


def call_figures(
    profiles: int, writes: int, total: int, floor: int, seconds: float, inevitable: float
) -> dict[str, Figure]:
    """The figures every vendor's bench gives of one measured push: calls against the
    floor no client could go below, and time against what the vendor's limits make
    inevitable (n/a where the limits' bursts cover every call)."""
    return {
        "floor_calls": floor,
        "write_calls": writes,
        "read_calls": total - writes,
        "write_calls_per_10k": round(writes * 10_000 / profiles, 1),
        "all_calls_per_10k": round(total * 10_000 / profiles, 1),
        "ratio_to_floor": round(writes / floor, 4),
        "rate_limit_floor_s": round(inevitable, 2),
        "ratio_to_rate_limit_floor": round(seconds / inevitable, 3) if inevitable else "n/a",
    }
