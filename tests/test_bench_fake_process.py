"""The benches' fakes served from a child process: the host lives in another process, its
answers come back through the proxy, and it is stopped on the way out."""

from __future__ import annotations

import os
from pathlib import Path

from bench.fake_process import served_in_child


class Host:
    """A stand-in for a bench's fake host: counts what it is asked, notes its stop."""

    def __init__(self, stopped: str) -> None:
        self.stopped = Path(stopped)
        self.asked = 0

    def where(self) -> int:
        self.asked += 1
        return os.getpid()

    def counters(self) -> dict[tuple[str, str], int]:
        return {("POST", "upsert"): self.asked}

    def stop(self) -> None:
        self.stopped.write_text("stopped", encoding="utf-8")


def test_the_host_runs_in_a_child_and_its_counters_come_back(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    with served_in_child(Host, str(stopped)) as host:
        child = host.where()
        host.where()
        assert child != os.getpid()
        assert host.counters() == {("POST", "upsert"): 2}
        assert not stopped.exists()
    assert stopped.read_text(encoding="utf-8") == "stopped"
