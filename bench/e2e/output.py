"""Where the figures go: merged into the results file, and printed as a table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench import results
from bench.e2e.figures import scaling_targets
from bench.e2e.options import CONFIG_NAMES, ENGINES, ROOT, RUNS, Size, key_prefix, size_label
from bench.results import Figure

NAMES = tuple(CONFIG_NAMES.values())  # the destinations' names, which stages are keyed by

# (heading, figure keys: the first one present); a run on workers names its stages
# apart: pull, prepare (consent and collect), plan (plan tasks), push (push tasks)
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wall", ("wall_s",)), ("pull", ("stage_s.pull",)), ("read", ("stage_s.pull.read",)),
    ("stage", ("stage_s.pull.stage",)),
    ("consent", (*(f"stage_s.consent.{n}" for n in NAMES), "stage_s.prepare")),
    ("plan+push", ("stage_s.plan+push", "stage_s.plan")),
    ("push", (*(f"stage_s.push.{n}" for n in NAMES), "stage_s.push")),
    ("ledger", ("stage_s.ledger",)),
    ("rec/s", ("staging_records_per_s",)), ("cpu", ("cpu_s",)), ("wrk cpu", ("workers_cpu_s",)),
    ("rss MB", ("peak_rss_mb",)), ("changes", ("changes",)), ("calls", ("calls_total",)),
    ("sync", ("sync_calls",)), ("floor", ("floor_calls",)), ("ratio", ("ratio_to_floor",)),
    ("t.floor", ("time_floor_s",)), ("wall/tf", ("wall_over_time_floor",)),
    ("inflight", ("max_in_flight",)), ("429", ("rejected_429",)),
)  # fmt: skip


def save(figures: dict[str, Figure]) -> Path:
    """Merges into the "e2e" entry, so sizes measured at different times sit together; a
    run measured again replaces every figure of its earlier measurement, so none that
    the run no longer gives (a call it stopped making) is left beside the new ones."""
    earlier: dict[str, Figure] = {}
    if results.RESULTS.exists():
        found = json.loads(results.RESULTS.read_text(encoding="utf-8")).get("e2e", {})
        measured = {run_of(key) for key in figures} - {None}
        earlier = {
            k: v
            for k, v in found.items()
            if k.split(".")[0] in ENGINES and run_of(k) not in measured
        }
    merged = {**earlier, **figures}
    return results.record("e2e", {**merged, **scaling_targets(merged)})


def run_of(key: str) -> str | None:
    """The run a figure's key belongs to, up to the run's name
    (``postgresql.100000.klaviyo.first``), or None for a figure of no one run."""
    parts = key.split(".")
    for index, part in enumerate(parts):
        if part in RUNS:
            return ".".join(parts[: index + 1])
    return None


def table(
    figures: dict[str, Figure],
    configs: list[tuple[str, Size, int]],
    destination: str = "mailchimp",
) -> str:
    """A row per run under the main columns, then each configuration's own figures (not
    per run); (engine, size, workers), workers 0 being the run in one process."""
    width = 29 if destination == "mailchimp" else 38
    lines = ["  ".join([f"{'run':<{width}}", *(f"{h:>9}" for h, _ in COLUMNS)])]
    vendor = "" if destination == "mailchimp" else f"{destination} "
    for engine, size, workers in configs:
        prefix = key_prefix(engine, size, workers, destination)
        for run in RUNS:
            cells = [_first(figures, f"{prefix}{run}.", keys) for _, keys in COLUMNS]
            name = f"{engine} {size_label(size)} {vendor}w{workers} {run}"
            lines.append("  ".join([f"{name:<{width}}", *(f"{c!s:>9}" for c in cells)]))
        for key, value in figures.items():
            if key.startswith(prefix) and "." not in key[len(prefix) :].replace(
                "per_contact.", ""
            ).replace("target.", ""):
                lines.append(f"    {key[len(prefix) :]}: {value}")
    return "\n".join(lines)


def _first(figures: dict[str, Figure], prefix: str, keys: tuple[str, ...]) -> Figure:
    return next((figures[prefix + k] for k in keys if prefix + k in figures), "")


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
