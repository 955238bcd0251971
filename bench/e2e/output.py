"""Where the figures go: merged into the results file, and printed as a table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench import results
from bench.e2e.figures import scaling_targets
from bench.e2e.options import ENGINES, ROOT, RUNS
from bench.results import Figure

COLUMNS = (
    ("wall", "wall_s"), ("pull", "stage_s.pull"), ("read", "stage_s.pull.read"),
    ("stage", "stage_s.pull.stage"), ("consent", "stage_s.consent.mc"),
    ("plan+push", "stage_s.plan+push"), ("push", "stage_s.push.mc"), ("ledger", "stage_s.ledger"),
    ("rec/s", "staging_records_per_s"), ("cpu", "cpu_s"), ("rss MB", "peak_rss_mb"),
    ("changes", "changes"), ("calls", "calls_total"), ("sync", "sync_calls"),
    ("floor", "floor_calls"), ("ratio", "ratio_to_floor"),
)  # fmt: skip


def save(figures: dict[str, Figure]) -> Path:
    """Merges into the "e2e" entry, so sizes measured at different times sit together."""
    earlier: dict[str, Figure] = {}
    if results.RESULTS.exists():
        found = json.loads(results.RESULTS.read_text(encoding="utf-8")).get("e2e", {})
        earlier = {k: v for k, v in found.items() if k.split(".")[0] in ENGINES}
    merged = {**earlier, **figures}
    return results.record("e2e", {**merged, **scaling_targets(merged)})


def table(figures: dict[str, Figure], configs: list[tuple[str, int]]) -> str:
    """A row per run under the main columns, then each size's own figures (not per run)."""
    lines = ["  ".join([f"{'run':<26}", *(f"{h:>9}" for h, _ in COLUMNS)])]
    for engine, size in configs:
        for run in RUNS:
            cells = [figures.get(f"{engine}.{size}.{run}.{key}", "") for _, key in COLUMNS]
            lines.append(
                "  ".join([f"{f'{engine} {size:,} {run}':<26}", *(f"{c!s:>9}" for c in cells)])
            )
        prefix = f"{engine}.{size}."
        for key, value in figures.items():
            if key.startswith(prefix) and "." not in key[len(prefix) :].replace(
                "per_contact.", ""
            ).replace("target.", ""):
                lines.append(f"    {key[len(prefix) :]}: {value}")
    return "\n".join(lines)


def describe_source(source: Path | None) -> str:
    """Which code the figures are of: the tree given, or the checkout and its commit."""
    if source is not None:
        return str(source.resolve())

    def git(*args: str) -> str:  # read only: no optional locks, so no index refresh
        command = ["git", "--no-optional-locks", "-C", str(ROOT), *args]
        return subprocess.run(command, check=False, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    local = git("status", "--porcelain", "--untracked-files=no")
    return f"{ROOT} at {commit or 'unknown commit'}" + (" with local changes" if local else "")
