"""Progress on a terminal: ``crmsync run`` with stderr on a pseudo-terminal draws a bar per
stage (pull per stream, profiles, push per destination) that redraws in place, with
counts that end at the run's own; ``-v`` log lines are printed whole above the bars.
Where stderr is not a terminal, or with ``--no-progress``, nothing of a display is
written."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from tests.e2e import AS_OF, Site, make_site

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = 120
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours, cursor moves, line clears
BAR = "━"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def run_on_terminal(site: Site, *options: str) -> tuple[dict[str, Any], str]:
    """Runs ``crmsync -v run`` (and ``options``) with stderr on a pseudo-terminal;
    returns its report and what it drew."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    command = [sys.executable, "-m", "cli", "-v", "run", "--config", str(site.config)]
    process = subprocess.Popen(
        [*command, "--as-of", AS_OF, "--json", *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(slave)
    drawn = bytearray()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            assert ready, "the run drew nothing for two minutes"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other end is gone
                break
            if not chunk:
                break
            drawn += chunk
        stdout = process.communicate(timeout=120)[0]
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, drawn.decode(errors="replace")[-2000:]
    report: dict[str, Any] = json.loads(stdout)[0]
    return report, drawn.decode("utf-8")


def visible(drawn: str) -> list[str]:
    """What each line and each redraw of it showed, control sequences removed."""
    return [part for part in re.split(r"[\r\n]+", CONTROL.sub("", drawn)) if part.strip()]


def last_frame(lines: list[str], stage: str) -> str:
    found = [line for line in lines if line.startswith(f"{stage} ") and BAR in line]
    assert found, f"no bar for {stage}"
    return found[-1]


def test_a_run_on_a_terminal_draws_a_bar_per_stage_redrawn_in_place(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=1500)
    report, drawn = run_on_terminal(site)
    lines = visible(drawn)
    for stream in ("customers", "orders", "carts"):
        received = report["pulled"][f"shop.{stream}"]["received"]
        frame = last_frame(lines, f"pull shop.{stream}")
        assert f"{received:,}/{received:,} records" in frame and "100%" in frame, frame
    people = report["profiles"] - report["profiles_kept"]
    assert f"{people:,}/{people:,} people" in last_frame(lines, "profiles")
    pushed = report["destinations"]["out"]["ok"]
    frame = last_frame(lines, "push out")
    assert f"{pushed:,}/{pushed:,} changes" in frame and re.search(r"[\d,]+/s", frame), frame
    # redrawn in place: the cursor goes back up over the bars, and no drawn line holds
    # more than one stage (the old display appended every update to one line)
    assert "\x1b[1A" in drawn and "\x1b[2K" in drawn
    assert sum(line.startswith("pull shop.customers ") for line in lines) >= 2
    stages = ("pull shop.", "profiles ", "push out ")
    assert all(sum(line.count(s) for s in stages) <= 1 for line in lines)
    assert all(len(line) <= COLUMNS for line in lines if BAR in line)
    # -v lines are whole lines of their own, above the bars, never inside one
    logged = [line for line in lines if " INFO crmsync." in line]
    assert any("INFO crmsync.run: pull shop.customers: 1,5" in line for line in logged), logged
    for line in logged:
        assert LOG_LINE.match(line) and BAR not in line, line
    # a line longer than the terminal is still one line (the terminal folds it)
    summary = [line for line in logged if "INFO crmsync.run: run main succeeded in " in line]
    assert len(summary) == 1 and len(summary[0]) > COLUMNS and summary[0].endswith(")"), summary
    assert drawn.rstrip().endswith("\x1b[?25h")  # the cursor is given back


def test_no_display_where_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=200)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "run", "--config", str(site.config), "--as-of", AS_OF],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm-256color", "FORCE_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # a clean store, no -v: nothing at all on stderr
    assert "pipeline main" in done.stdout and BAR not in done.stdout


def test_no_display_with_no_progress_even_on_a_terminal(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=200)
    report, drawn = run_on_terminal(site, "--no-progress")
    assert report["status"] == "succeeded"
    assert BAR not in drawn and "\x1b[" not in drawn
    lines = drawn.splitlines()
    assert any("INFO crmsync.run: push out: " in line for line in lines)
    assert all(LOG_LINE.match(line) for line in lines if line.strip()), lines


def test_bars_follow_a_total_that_was_an_estimate_and_logging_is_given_back() -> None:
    from rich.console import Console

    from crmsync.progress_rich import RichProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=COLUMNS, color_system=None)
    handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.addHandler(handler)
    bars = RichProgress(console)
    try:
        bars.start("profiles", total=100)  # last run's count: this run has more people
        bars.advance("profiles", 80)
        bars.advance("profiles", 40)
        assert [(t.completed, t.total) for t in bars._bars.tasks] == [(120, 120)]
        assert handler.stream is not sys.stderr  # while the bars are up, logs go above them
        bars.grow("push out", 500)
        bars.advance("push out", 200)
        bars.finish("push out")
        bars.finish("profiles", 118)  # the exact count, when advances were coarser
        assert [(t.completed, t.total) for t in bars._bars.tasks] == [(118, 118), (200, 200)]
    finally:
        bars.close()
        root.removeHandler(handler)
    assert handler.stream is sys.stderr
    drawn = visible(screen.getvalue())
    assert any(line.startswith("push out ") and "200/200 changes" in line for line in drawn)
