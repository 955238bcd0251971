"""Watching a run's process tree from ``/proc``: peak RSS per process and, on PostgreSQL,
the CPU of the server processes that work for the run's database."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e.config import admin_dsn


@dataclass(frozen=True)
class Peaks:
    """Sampled peak RSS (kB): crmsync's main process, the largest other, and how many
    processes the tree had."""

    main: int
    others: int
    processes: int


class Watcher(threading.Thread):
    """Samples the run's process tree (peak RSS per process) and, on PostgreSQL, the CPU of
    the server processes working for the run's database, until stopped."""

    def __init__(
        self, pid: int, database: str | None, launcher: bool = False, interval: float = 0.25
    ) -> None:
        super().__init__(daemon=True)
        self.pid, self.database, self.interval = pid, database, interval
        self.launcher = launcher  # ``pid`` only starts crmsync: its child is the main process
        self.peak_kb: dict[int, int] = {}
        self.parent: dict[int, int] = {}
        self.server_ticks: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        conn = None
        if self.database is not None:
            import psycopg

            conn = psycopg.connect(admin_dsn(), autocommit=True)
        try:
            while not self._done.wait(self.interval):
                self._sample(conn)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peaks(self) -> Peaks:
        """The sampled peaks (kB): crmsync's main process, the largest other, how many."""
        main = [p for p, parent in self.parent.items() if self.launcher and parent == self.pid]
        main_pid = main[0] if main else self.pid
        others = [kb for p, kb in self.peak_kb.items() if p not in (main_pid, self.pid)]
        return Peaks(self.peak_kb.get(main_pid, 0), max(others, default=0), 1 + len(others))

    def server_cpu(self) -> float | None:
        """Seconds of CPU the database's server processes were seen to use (None: SQLite)."""
        if self.database is None:
            return None
        return sum(self.server_ticks.values()) / os.sysconf("SC_CLK_TCK")

    def _sample(self, conn: Any) -> None:
        for pid, parent in process_tree(self.pid):
            kb = status_kb(pid, "VmHWM")
            if kb:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), kb)
                self.parent[pid] = parent
        if conn is not None:
            query = "select pid from pg_stat_activity where datname = %s"
            for (pid,) in conn.execute(query, (self.database,)).fetchall():
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    self.server_ticks[pid] = max(self.server_ticks.get(pid, 0), ticks)


def process_tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [(root, 0)]
    while todo:
        pid, parent = todo.pop()
        found.append((pid, parent))
        todo.extend((child, pid) for child in children.get(pid, ()))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, ..., utime (11), stime (12)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else None
