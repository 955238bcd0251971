"""One run of ``serve`` (``service.runner``): it skips a pipeline another process runs,
naming the holder; it reports what the run did, with the run's id on its log lines; and a
stop interrupts it in its own thread only, once, at the next batch."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crmsync.config import Config, PipelineSpec
from crmsync.progress import NoProgress
from crmsync.runs import Interrupted, RunOptions, RunReport
from engine.resolve import load_config
from service import logs
from service.events import Event, RunFinished, RunSkipped, RunStarted
from service.runner import Runner
from service.stop import StopAtBatch, StopFlag
from state.store import Store
from tests.e2e import make_site


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)

    def notify(self, event: Event) -> None:
        self.events.append(event)


def _config(tmp_path: Path) -> Config:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=20)
    return load_config(site.config)


def test_a_pipeline_another_process_runs_is_skipped_naming_the_holder(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.state_url)
    assert store.acquire_lease("pipeline:main", 600, holder="other-host:7") is not None
    seen = Recorder()
    report = Runner(seen, StopFlag()).run("", config, config.pipelines["main"])
    assert report is None
    (skipped,) = seen.events
    assert isinstance(skipped, RunSkipped)
    assert (skipped.reason, skipped.holder) == ("running in another process", "other-host:7")
    assert store.runs("main") == []
    assert store.lease_holder("pipeline:main") is not None  # not taken from its holder
    store.close()


def test_a_run_is_reported_with_its_counts_and_logs_under_its_run_id(tmp_path: Path) -> None:
    config = _config(tmp_path)
    contexts: list[dict[str, object]] = []
    from engine.pipeline import run_pipeline

    def run(config: Config, spec: PipelineSpec, store: Store, options: RunOptions) -> RunReport:
        report = run_pipeline(config, spec, store, options)
        contexts.append(logs.context())
        return report

    seen = Recorder()
    report = Runner(seen, StopFlag(), run=run).run("", config, config.pipelines["main"])
    assert report is not None and report.status == "succeeded"
    started, finished = seen.events
    assert isinstance(started, RunStarted) and started.kind == "scheduled"
    assert isinstance(finished, RunFinished) and finished.report is report
    assert contexts == [{"pipeline": "main", "run_id": report.run_id}]
    assert report.destinations["out"].counts["ok"] > 0


def test_a_failed_run_is_reported_from_what_it_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path)

    def run(config: Config, spec: PipelineSpec, store: Store, options: RunOptions) -> RunReport:
        run_id = store.start_run(spec.name, options.kind, datetime.now(UTC))
        store.finish_run(run_id, "failed", {"pulled": {"shop.customers": {"staged": 3}}}, "boom")
        raise RuntimeError("boom")

    seen = Recorder()
    report = Runner(seen, StopFlag(), run=run).run("", config, config.pipelines["main"])
    assert report is not None
    assert (report.status, report.error, report.run_id) == ("failed", "boom", 1)
    assert report.pulled == {"shop.customers": {"staged": 3}}
    assert isinstance(seen.events[-1], RunFinished) and seen.events[-1].report is report


def test_a_stop_interrupts_the_run_in_its_own_thread_once_at_the_next_batch() -> None:
    stop = StopFlag()
    progress = StopAtBatch(NoProgress(), stop)
    progress.grow("push out", 10)  # not stopping: nothing happens
    stop.set("stopped by SIGTERM", 143)
    other: list[BaseException] = []

    def sender() -> None:
        try:
            progress.advance("push out", 10)  # a sender's answer: never interrupted
        except BaseException as exc:
            other.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    thread.join()
    assert other == []
    with pytest.raises(Interrupted) as caught:
        progress.grow("push out", 10)
    assert (caught.value.reason, caught.value.exit_code) == ("stopped by SIGTERM", 143)
    progress.grow("push out", 10)  # unwinding: not again
    progress.finish("push out")


def test_nothing_starts_once_the_service_is_stopping(tmp_path: Path) -> None:
    config = _config(tmp_path)
    stop = StopFlag()
    stop.set("stopped by SIGTERM", 143)
    seen = Recorder()
    calls: list[Any] = []
    runner = Runner(seen, stop, run=lambda *a: calls.append(a))  # type: ignore[arg-type,return-value]
    assert runner.run("", config, config.pipelines["main"]) is None
    assert calls == [] and seen.events == []
