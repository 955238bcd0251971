"""``-v`` tells a run's phases with their timings: one INFO line per stage (pull per
stream, profiles, push per destination), the ledger's time and the run's, each with the
count the run's report gives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e import AS_OF, make_site

ROOT = Path(__file__).resolve().parent.parent
# "<time> INFO crmsync.run: <stage>: <count> <unit> in <seconds> s[, <rate>/s]"
PHASE = re.compile(
    r" INFO crmsync\.run: (?P<stage>[^:]+): (?P<count>[\d,]+) (?P<unit>\w+) in [\d.]+ s"
)


def run_verbose(config: Path) -> tuple[dict[str, Any], str]:
    command = [sys.executable, "-m", "cli", "-v", "run", "--config", str(config)]
    done = subprocess.run(
        [*command, "--as-of", AS_OF, "--json"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)[0]
    return report, done.stderr


def phases(stderr: str) -> dict[str, tuple[int, str]]:
    found: dict[str, tuple[int, str]] = {}
    for match in PHASE.finditer(stderr):
        assert match.group("stage") not in found, f"{match.group('stage')} told twice"
        found[match.group("stage")] = (int(match.group("count").replace(",", "")), match["unit"])
    return found


def test_each_phase_is_told_once_with_its_count_and_seconds(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=150)
    report, stderr = run_verbose(site.config)
    told = phases(stderr)
    for stream in ("customers", "orders", "carts"):
        received = report["pulled"][f"shop.{stream}"]["received"]
        assert told[f"pull shop.{stream}"] == (received, "records")
    assert told["profiles"] == (report["profiles"] - report["profiles_kept"], "people")
    pushed = sum(
        report["people"]["out"][d] for d in ("create", "update") if d in report["people"]["out"]
    )
    assert told["push out"] == (pushed, "changes") and pushed > 0
    assert re.search(r"INFO crmsync\.run: ledger: [\d.]+ s", stderr)
    assert re.search(r"INFO crmsync\.run: run main succeeded in [\d.]+ s \(.*pull [\d.]+ s", stderr)


def test_a_run_with_nothing_to_do_tells_no_pull_and_no_push(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=40)
    run_verbose(site.config)
    report, stderr = run_verbose(site.config)
    told = phases(stderr)
    assert not [stage for stage in told if stage.startswith(("pull ", "push "))], told
    assert told["profiles"] == (0, "people")  # everyone kept from the last planning
    assert report["profiles_kept"] == report["profiles"] > 0
    assert "pulled shop.customers: unchanged since its last read" in stderr
