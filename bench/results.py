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
