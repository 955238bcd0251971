"""The units of a run's work, as Celery tasks: each does what the in-process run does for
its part, and writes its result and its effects to the state database together.

Every task runs under ``state.work_queue.claim``: a second delivery of a task (a worker
killed before it acknowledged, a message published twice) waits for the first, then
finds it done and does nothing. What each does again when its first delivery died
part-way is what a run in one process does again after a crash:

- ``pull_stream`` stages one stream as ``engine.pull`` does: batches commit as they go,
  the cursor moves with the last one, and a re-read is de-duplicated;
- ``prepare_destination`` reads consent back, settles earlier runs' jobs and prepares
  the destination's fields, as a run does before planning;
- ``plan_slice`` plans one slice of the key space (``engine.planner``), only the run's
  scope in it when the run plans incrementally, and writes its changes and people in
  one transaction with its result: all of them, or none;
- ``push_batch`` pushes a batch of the slices' changes (every batch full but the
  last, so a batch may span slices) as ``engine.push`` does (in flight, push,
  acknowledgements), and marks itself done in the transaction that records the
  answers: a batch sent but not recorded is sent again, the same idempotent upsert,
  as after a crash;
- ``collect_jobs`` settles the destination's pending jobs (``Pusher.collect``).

A task that fails is recorded failed with its error (the coordinator fails the run with
it) and acknowledged: nothing is retried behind the run's back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.contract import (
    Action,
    Change,
    Destination,
    Outcome,
    PreparedOnce,
    PushResult,
    Source,
)
from crmsync.errors import ConfigError, ConnectorError, SendLater
from crmsync.incremental import fingerprint
from crmsync.profile_scope import KeyRange
from crmsync.records import Record, RecordIssue, Stream
from crmsync.runs import DestinationReport, RunOptions, RunReport, describe_error
from distributed import loaded
from distributed.work import (
    COLLECT,
    PLAN,
    PREPARE,
    PULL,
    PUSH,
    PlanArgs,
    Work,
    collect_key,
    plan_key,
    prepare_key,
    profile_context,
    pull_key,
    push_key,
    tally_data,
)
from engine.pipeline import context_for, read_consent_once
from engine.planner import Planner, Target
from engine.pull import pull_source
from engine.push import Pusher
from engine.read_ahead import SourceRecipe
from state.ledger import RetryPolicy, mark_in_flight, record_results
from state.planned import SCOPE
from state.store import Store
from state.timeutil import now_ms
from state.work_queue import (
    SliceWriter,
    batch_changes,
    claim,
    fill_slice_scope,
    finish,
    mark_stopped,
    stopped,
)

log = logging.getLogger("crmsync.distributed")
Body = Callable[[Config, PipelineSpec, Store], dict[str, Any] | None]


def retry_policy(spec: PipelineSpec) -> RetryPolicy:
    return RetryPolicy(spec.settings.max_attempts, int(spec.settings.retry_minutes * 60_000))


def _run(data: dict[str, Any], key: str, body: Body) -> None:
    """Runs ``body`` once for this task of the run; a result it returns is recorded as the
    task's (a body that records its own, in its last transaction, returns None)."""
    work = Work.of(data)
    config = loaded.config_of(work)
    spec = loaded.pipeline_of(config, work)
    store = loaded.store_of(config.state_url)
    with claim(store.engine, work.run, key) as go:
        if not go:
            log.info("run %d: %s is done already, or its run ended: not run again", work.run, key)
            return
        try:
            result = body(config, spec, store)
        except Exception as exc:
            log.exception("run %d: %s failed", work.run, key)
            with store.transaction() as conn:
                finish(conn, work.run, key, {}, error=describe_error(exc))
            return
        if result is not None:
            with store.transaction() as conn:
                finish(conn, work.run, key, result)


# -- pull -------------------------------------------------------------------------------


class _OneStream:
    """A source seen through one of its streams: ``pull_source`` reads just that one.
    What else the source offers (``Versioned``, ``Sized``) is its own, passed through."""

    def __init__(self, source: Source, stream: Stream) -> None:
        self._source, self._stream = source, stream

    def streams(self) -> Sequence[Stream]:
        return [self._stream] if self._stream in self._source.streams() else []

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        return self._source.read(stream, since, until)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


def pull_stream(work: dict[str, Any], source: str, stream: str, until: str, full: bool) -> None:
    def body(config: Config, spec: PipelineSpec, store: Store) -> dict[str, Any]:
        return pull_one(
            config, spec, store, source, Stream(stream), datetime.fromisoformat(until), full
        )

    _run(work, pull_key(source, stream), body)


def pull_one(
    config: Config,
    spec: PipelineSpec,
    store: Store,
    source: str,
    stream: Stream,
    until: datetime,
    full: bool,
) -> dict[str, Any]:
    """A pull task's work: one stream of one source, read and staged; its counts."""
    found = next((s for s in spec.sources if s.name == source), None)
    if found is None:
        raise ConfigError(f"pipeline {spec.name!r} reads no source {source!r} any more")
    recipe = SourceRecipe(found.cls, found.config, context_for(config, found.name))
    instance = recipe.build()
    try:
        stats = pull_source(
            store,
            source,
            _OneStream(instance, stream),  # type: ignore[arg-type]
            until=until,
            lookback=timedelta(minutes=spec.settings.lookback_minutes),
            full=full,
            # a large read from scratch goes ahead in reader processes beside the
            # staging, as in a run in one process (``engine.read_ahead``)
            recipe=recipe if spec.settings.workers != 1 else None,
        )
    finally:
        instance.close()
    return {f"{source}.{name}": s.as_dict() for name, s in stats.streams.items()}


# -- prepare ----------------------------------------------------------------------------


def prepare_destination(work: dict[str, Any], destination: str) -> None:
    run = Work.of(work).run

    def body(config: Config, spec: PipelineSpec, store: Store) -> dict[str, Any]:
        dest = _destination(spec, destination)
        instance = dest.cls(dest.config, context_for(config, dest.name))
        report = RunReport(spec.name, run, "manual", False, datetime.now(UTC))
        answered = report.destinations[dest.name] = DestinationReport(dest.name, dest.kind)
        try:
            read_consent_once(store, spec, dest.name, instance, report)
            pusher = _pusher(dest.name, instance, store, answered, run, spec)
            pusher.collect()  # jobs an earlier run left: settled before the diff
            instance.prepare(dest.mapping.field_specs())
            # what it found, for the run's other processes to take over instead of
            # preparing the destination again (``loaded.destination_of``)
            found = instance.prepared() if isinstance(instance, PreparedOnce) else None
            return {
                "consent_read": report.consent_read.get(dest.name, 0),
                "max_batch": instance.max_batch,
                "prepared": found,
                **_answered(answered),
            }
        finally:
            instance.close()

    _run(work, prepare_key(destination), body)


def _destination(spec: PipelineSpec, name: str) -> DestinationSpec:
    found = next((d for d in spec.destinations if d.name == name), None)
    if found is None:
        raise ConfigError(f"pipeline {spec.name!r} sends to no destination {name!r} any more")
    return found


def _pusher(
    name: str,
    instance: Destination,
    store: Store,
    report: DestinationReport,
    run: int,
    spec: PipelineSpec,
    wait_seconds: float = 0.0,
) -> Pusher:
    options = RunOptions(job_wait_seconds=wait_seconds)
    return Pusher(name, instance, store, report, options, run, retry_policy(spec))


def _answered(report: DestinationReport) -> dict[str, Any]:
    counts = {k: v for k, v in report.counts.items() if v}
    return {"counts": counts, "error": report.error, "full": report.full}


# -- plan -------------------------------------------------------------------------------


def plan_slice(
    work: dict[str, Any], part: int, low: str | None, high: str | None, plan: dict[str, Any]
) -> None:
    args = PlanArgs.of(plan)
    run = Work.of(work).run
    key = plan_key(part)

    def body(config: Config, spec: PipelineSpec, store: Store) -> None:
        if fingerprint(spec) != args.fingerprint:  # a file changed since it was loaded?
            spec = loaded.pipeline_of(loaded.config_of(Work.of(work), fresh=True), Work.of(work))
            if fingerprint(spec) != args.fingerprint:
                raise ConfigError(
                    f"the configuration of pipeline {spec.name!r} changed since run {run} "
                    "began: its workers would plan differently",
                    key=f"pipelines.{spec.name}",
                    hint="run again; give every worker the same configuration files",
                )
        as_of = args.as_of_time()
        targets = [Target(d.name, d.mapping) for d in spec.destinations]
        ctx = profile_context(spec, as_of)
        planner = Planner(ctx, spec.segments, targets, args.the_policy(), as_of, args.samples)
        tally = planner.new_tally()
        keys = KeyRange(low, high)
        # the groups the slice's upserts name, per destination (``PreparedOnce.expect``)
        groups: list[set[str]] = [set() for _ in targets]
        with store.engine.connect() as read, store.transaction() as write:
            writer = SliceWriter(write, run, part, [t.name for t in targets])
            # an incremental run: only its scope within the slice, as the coordinator cut
            # it, in a temporary table of the read connection, made in its transaction
            scope = SCOPE if args.scoped else None
            if scope is not None:
                fill_slice_scope(read, run, keys)
            for index, change in planner.changes(
                read, tally, keys, scope=scope, planned=writer.person
            ):
                writer.change(index, change)
                if change.action is Action.UPSERT:
                    groups[index].update(change.memberships)
            # the reads wrote nothing: ending their transaction drops the table made in it
            # (a plain DROP would now go through the reads' server-side cursor and fail),
            # as it does when a task fails part-way and its connection goes back to the pool
            read.rollback()
            counts = writer.close()
            named = {t.name: sorted(found) for t, found in zip(targets, groups, strict=True)}
            result = {"tally": tally_data(tally), "changes": counts, "groups": named}
            finish(write, run, key, result)

    _run(work, key, body)


# -- push -------------------------------------------------------------------------------


def push_batch(
    work: dict[str, Any], destination: str, part: int, batch: int, segments: list[list[int]]
) -> None:
    """Pushes one batch: ``segments`` of (slice, start, stop) positions, the first in slice
    ``part`` (which, with ``batch``, names the task)."""
    run = Work.of(work).run
    key = push_key(destination, part, batch)
    cut = [(int(p), int(a), int(b)) for p, a, b in segments]

    def body(config: Config, spec: PipelineSpec, store: Store) -> None:
        dest = _destination(spec, destination)
        with store.engine.connect() as conn:
            changes = batch_changes(conn, run, destination, cut)
            halted = stopped(conn, run, destination)
        if halted is not None:  # the destination stopped while this batch waited
            with store.transaction() as conn:
                finish(conn, run, key, {"counts": {"not_sent": len(changes)}})
            return
        with loaded.destination_of(config, dest, run) as instance:
            _push(store, destination, instance, run, key, changes, retry_policy(spec))

    _run(work, key, body)


def _push(
    store: Store,
    name: str,
    instance: Destination,
    run: int,
    key: str,
    batch: list[Change],
    retry: RetryPolicy,
) -> None:
    """One batch as ``engine.push.Pusher`` pushes it: in flight, pushed, answers recorded
    (with the task's end, in one transaction). A destination that failed as a whole, or
    can take no more, is marked stopped for the rest of the run."""
    with store.transaction() as conn:
        mark_in_flight(conn, name, run, batch, now_ms())
    error, full = None, False
    try:
        results = instance.push(batch)
    except SendLater as exc:  # nothing of the batch was sent, and nothing more can be
        error, full = str(exc), True
        results = [PushResult(c.person_key, Outcome.NOT_SENT, message=error) for c in batch]
    except (ConfigError, ConnectorError) as exc:  # refused or down: failed, retried next run
        error = str(exc)
        results = [PushResult(c.person_key, Outcome.FAILED, message=error) for c in batch]
    else:
        for result in results:
            if result.outcome is Outcome.NOT_SENT:
                error, full = result.message or f"{name} can take no more", True
                break
    with store.transaction() as conn:
        counts = record_results(conn, name, run, batch, results, now_ms=now_ms(), retry=retry)
        if error is not None:
            mark_stopped(conn, run, name, error, full=full)
        finish(conn, run, key, {"counts": {k: v for k, v in counts.items() if v}})


# -- collect ----------------------------------------------------------------------------


def collect_jobs(work: dict[str, Any], destination: str, wait_seconds: float) -> None:
    run = Work.of(work).run

    def body(config: Config, spec: PipelineSpec, store: Store) -> dict[str, Any]:
        dest = _destination(spec, destination)
        answered = DestinationReport(dest.name, dest.kind)
        with loaded.destination_of(config, dest, run) as instance:
            pusher = _pusher(dest.name, instance, store, answered, run, spec, wait_seconds)
            running = pusher.collect(wait_seconds)
        return {"running": running, **_answered(answered)}

    _run(work, collect_key(destination), body)


TASKS: dict[str, Callable[..., None]] = {
    PULL: pull_stream,
    PREPARE: prepare_destination,
    PLAN: plan_slice,
    PUSH: push_batch,
    COLLECT: collect_jobs,
}
