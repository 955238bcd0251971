"""The benchmark results file: each benchmark merges its figures under its own name."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(os.environ.get("CRMSYNC_BENCH_RESULTS", Path(__file__).parent / "results.json"))

Figure = float | int | str


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
