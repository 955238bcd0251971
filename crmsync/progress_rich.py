"""Live progress bars on a terminal: one display per command, a bar per stage of a run
(pull per stream, profiles, push per destination) with its count, its total when known,
its rate and the time left.

The display draws on stderr and redraws itself in place (rich's ``Live``). While it is
up, the ``logging`` handlers that wrote to stderr write through it instead, so a log line
is printed above the bars, whole, never into one. The display starts with the first
stage, so a command that has nothing to do draws nothing. Only the CLI imports this
module, and only when stderr is a terminal: a run elsewhere never imports rich.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import IO, cast

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from crmsync.progress import unit_of

REFRESHES_PER_SECOND = 4


class _Count(ProgressColumn):
    """``12,000/50,000 people``, or ``12,000 records`` while the total is unknown."""

    def render(self, task: Task) -> Text:
        total = f"/{int(task.total):,}" if task.total is not None else ""
        unit = task.fields.get("unit", "")
        return Text(f"{int(task.completed):,}{total} {unit}".rstrip(), style="progress.download")


class _Rate(ProgressColumn):
    """Items per second, over the last half-minute (over the whole stage once done)."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if task.finished_time:  # rich keeps no speed for a stage done in one batch
            speed = task.completed / task.finished_time
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


class _Above:
    """A text stream for log handlers that prints each whole line above the bars, as it
    is (not wrapped by the console: a long line is one line, the terminal folds it)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self.console.print(Text(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        return None


class RichProgress:
    """A ``crmsync.progress.Progress`` that draws bars on ``console`` (stderr)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _Count(),
            _Rate(),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=self.console,
            refresh_per_second=REFRESHES_PER_SECOND,
            redirect_stdout=False,  # the report goes to stdout after the display is down
            redirect_stderr=True,
        )
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._totals: dict[str, int | None] = {}
        self._done: dict[str, int] = {}
        self._live = False
        self._rebound: list[tuple[logging.StreamHandler[IO[str]], IO[str]]] = []

    def start(self, stage: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            self._begin(stage, total, unit)

    def grow(self, stage: str, n: int) -> None:
        with self._lock:
            if stage not in self._tasks:
                self._begin(stage, n, "")
                return
            total = (self._totals[stage] or 0) + n
            self._totals[stage] = total
            self._bars.update(self._tasks[stage], total=total)

    def estimate(self, stage: str, total: int) -> None:
        with self._lock:
            if stage not in self._tasks:
                self._begin(stage, None, "")
            total = max(total, self._done[stage])
            self._totals[stage] = total
            self._bars.update(self._tasks[stage], total=total)

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            if stage not in self._tasks:
                self._begin(stage, None, "")
            done = self._done[stage] = self._done[stage] + n
            total = self._totals[stage]
            if total is not None and done > total:  # the total was an estimate
                self._totals[stage] = done
                self._bars.update(self._tasks[stage], total=done)
            self._bars.advance(self._tasks[stage], n)

    def finish(self, stage: str, done: int | None = None) -> None:
        with self._lock:
            task = self._tasks.pop(stage, None)
            self._totals.pop(stage, None)
            counted = self._done.pop(stage, 0)
            if task is None:
                return
            if done is None:
                done = counted
            self._bars.update(task, total=done, completed=done)
            self._bars.stop_task(task)

    def close(self) -> None:
        with self._lock:
            if not self._live:
                return
            self._live = False
            self._bars.stop()
            for handler, stream in self._rebound:
                handler.setStream(stream)
            self._rebound.clear()

    def _begin(self, stage: str, total: int | None, unit: str) -> None:
        """A bar for ``stage`` (a new one when the stage runs again, for another
        pipeline); the display comes up with the first."""
        if not self._live:
            self._show()
        unit = unit or unit_of(stage)
        self._tasks[stage] = self._bars.add_task(stage, total=total, unit=unit)
        self._totals[stage] = total
        self._done[stage] = 0

    def _show(self) -> None:
        stderr = sys.stderr
        self._bars.start()  # other writes to sys.stderr now print above the bars too
        self._live = True
        above = cast(IO[str], _Above(self.console))
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stderr:
                self._rebound.append((handler, stderr))
                handler.setStream(above)
