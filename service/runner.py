"""One run of a pipeline for ``serve``: the lease, the run, its events and its log context.

Runs happen in the service's worker threads. A run of a pipeline whose lease another
process holds (another ``serve``, a ``crmsync backfill``) does not start: it is reported
``RunSkipped`` with the holder. Several processes serving the same configuration may fire
the same scheduled time; under the lease, a run that finds a scheduled run of that
pipeline started since that time skips it, so each scheduled time runs once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from crmsync.config import Config, PipelineSpec
from crmsync.errors import CrmsyncError
from crmsync.phase_log import PhaseLog
from crmsync.runs import DestinationReport, RunOptions, RunReport, interrupt_reason
from engine.pipeline import PipelineBusy, run_pipeline
from engine.push import LEASE_SECONDS
from service.events import Observer, RunFinished, RunSkipped, RunStarted
from service.stop import StopAtBatch, StopFlag
from state.engines import KeptEngines
from state.store import RunRow, Store

log = logging.getLogger("crmsync.service")

Bind = Callable[..., AbstractContextManager[Any]]


def _bind() -> Bind:
    """``service.logs.bind``: every line logged inside a run carries its store, pipeline
    and run id."""
    from service.logs import bind

    return bind


class RunStore(Store):
    """The state store of one run, which tells ``on_run`` the run's id as soon as the run
    is recorded (so that the run's log lines carry it from then on)."""

    def __init__(
        self, url: str, on_run: Callable[[int], None], kept: KeptEngines | None = None
    ) -> None:
        super().__init__(url, kept=kept)
        self._on_run = on_run

    def start_run(self, pipeline: str, kind: str, as_of: datetime, **kwargs: Any) -> int:
        run_id = super().start_run(pipeline, kind, as_of, **kwargs)
        self._on_run(run_id)
        return run_id


RunFn = Callable[[Config, PipelineSpec, Store, RunOptions], RunReport]  # one run of a pipeline


class Runner:
    """Runs pipelines in the calling thread and counts the runs under way (``wait``).

    ``engines``: the state databases kept open from run to run (``state.engines``); each
    run opens its own when None."""

    def __init__(
        self,
        observers: Observer,
        stop: StopFlag,
        *,
        run: RunFn | None = None,
        bind: Bind | None = None,
        engines: KeptEngines | None = None,
    ) -> None:
        self.observers, self.stop, self.engines = observers, stop, engines
        self._run = run or run_pipeline  # or ``run_on_workers``: the run goes to Celery workers
        self._bind = bind or _bind()
        self._active: Counter[str] = Counter()
        self._changed = threading.Condition()

    def active(self) -> list[str]:
        """The pipelines running now (``store/pipeline`` for a named store)."""
        with self._changed:
            return sorted(self._active.elements())

    def wait(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds for every run under way to end; True if they did."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._active, timeout)

    @contextmanager
    def _counted(self, label: str) -> Iterator[None]:
        with self._changed:
            self._active[label] += 1
        try:
            yield
        finally:
            with self._changed:
                self._active[label] -= 1
                self._active += Counter()  # drops the zero
                self._changed.notify_all()

    def run(
        self,
        store_name: str,
        config: Config,
        spec: PipelineSpec,
        *,
        kind: str = "scheduled",
        tick: datetime | None = None,
        jitter: int = 0,
    ) -> RunReport | None:
        """One run of ``spec``; None when it did not start (the lease is held elsewhere,
        this scheduled time has run already, or the service is stopping)."""
        if self.stop.is_set():
            return None
        label = f"{store_name}/{spec.name}" if store_name else spec.name
        with self._counted(label), self._bind(store=store_name or None, pipeline=spec.name) as ctx:

            def known(run_id: int) -> None:
                update = getattr(ctx, "update", None)  # ``service.logs.LogContext.update``
                if update is not None:
                    update(run_id=run_id)

            store = RunStore(config.state_url, known, self.engines)
            try:
                return self._leased(store_name, config, spec, store, kind, tick, jitter)
            finally:
                store.close()

    def _leased(
        self,
        store_name: str,
        config: Config,
        spec: PipelineSpec,
        store: Store,
        kind: str,
        tick: datetime | None,
        jitter: int,
    ) -> RunReport | None:
        lease = f"pipeline:{spec.name}"
        holder = store.acquire_lease(lease, LEASE_SECONDS)
        if holder is None:
            self._skipped(store_name, spec.name, store, "running in another process")
            return None
        try:  # ``run_pipeline`` takes the same lease again (same holder) and releases it
            if tick is not None and _ran_since(store, spec.name, tick - timedelta(seconds=jitter)):
                self._skipped(store_name, spec.name, None, "this scheduled time has run already")
                return None
            return self._run_once(store_name, config, spec, store, kind)
        finally:
            store.release_lease(lease, holder)

    def _run_once(
        self, store_name: str, config: Config, spec: PipelineSpec, store: Store, kind: str
    ) -> RunReport | None:
        started, clock = datetime.now(UTC), time.monotonic()
        self.observers.notify(RunStarted(store_name, spec.name, kind, started))
        progress = StopAtBatch(PhaseLog(), self.stop)
        options = RunOptions(kind=kind, progress=progress)
        log.info("run of %s started (%s)", spec.name, kind)
        try:
            report = self._run(config, spec, store, options)
        except PipelineBusy:  # taken between our look and the run's: not a failure
            self._skipped(store_name, spec.name, store, "running in another process")
            return None
        except KeyboardInterrupt as exc:  # the service is stopping (``StopAtBatch``)
            report = _recorded(store, spec, kind, started, "interrupted", interrupt_reason(exc))
            log.warning("run of %s interrupted: %s", spec.name, report.error)
        except CrmsyncError as exc:
            report = _recorded(store, spec, kind, started, "failed", str(exc))
            log.error("run of %s failed: %s", spec.name, exc)
        except Exception as exc:
            report = _recorded(store, spec, kind, started, "failed", f"{type(exc).__name__}: {exc}")
            log.exception("run of %s crashed", spec.name)
        else:
            log.info("run %s of %s ended: %s", report.run_id, spec.name, report.status)
        finally:
            progress.close()
        seconds = time.monotonic() - clock
        self.observers.notify(
            RunFinished(store_name, spec.name, report, seconds, datetime.now(UTC))
        )
        return report

    def _skipped(self, store_name: str, pipeline: str, store: Store | None, reason: str) -> None:
        held = store.lease_holder(f"pipeline:{pipeline}") if store is not None else None
        holder = held[0] if held else None
        log.info("run of %s skipped: %s%s", pipeline, reason, f" ({holder})" if holder else "")
        self.observers.notify(
            RunSkipped(store_name, pipeline, reason, holder=holder, at=datetime.now(UTC))
        )


def _ran_since(store: Store, pipeline: str, since: datetime) -> bool:
    """Whether a scheduled run of ``pipeline`` started at ``since`` or later."""
    return any(r.kind == "scheduled" and r.started_at >= since for r in store.runs(pipeline, 20))


def _recorded(
    store: Store, spec: PipelineSpec, kind: str, started: datetime, status: str, error: str
) -> RunReport:
    """The report of a run that raised, from what it recorded of itself (its counts, its
    status and reason); when it recorded nothing, from ``status`` and ``error``."""
    try:
        rows = store.runs(spec.name, 1)
    except CrmsyncError:
        rows = []
    row: RunRow | None = rows[0] if rows and rows[0].started_at >= started - _SLACK else None
    if row is None:
        return RunReport(spec.name, None, kind, False, started, status=status, error=error)
    report = RunReport(
        spec.name, row.id, row.kind, False, row.as_of, status=row.status, error=row.error or error
    )
    counts = row.counts
    report.pulled = dict(counts.get("pulled") or {})
    kinds = {d.name: d.kind for d in spec.destinations}
    people = counts.get("people") or {}
    for name, figures in (counts.get("destinations") or {}).items():
        report.destinations[name] = DestinationReport(
            name,
            kinds.get(name, ""),
            counts=Counter(figures),
            decisions=Counter(people.get(name) or {}),
        )
    return report


_SLACK = timedelta(seconds=5)  # the database's clock may be a little behind this one's
