"""``crmsync run --workers celery``: one pipeline run whose work Celery workers do.

The coordinator is the run's own process, as in ``engine.pipeline``: it holds the
pipeline's lease, records the run, and writes its report and status. Its phases go to
the workers in order, each waited for before the next (``dispatch``):

1. pull: each source's customers stream, then the orders and carts streams (which find
   their person by their customer) — every stream a task;
2. prepare: per destination, consent read back, earlier runs' jobs settled, fields
   prepared: before the planning that they change;
3. plan: the people whose plan may have changed since the last planning (everyone, when
   it must: ``crmsync.incremental``) cut into slices of about ``people_per_slice``, a
   task each; every slice's changes, per destination in its order, go to the state
   database;
4. push: the groups the run's changes name made ready here, once, where a destination
   can (``PreparedOnce.expect``: no two workers add them at once), then each
   destination's changes in batches cut at fixed positions of each slice, a task each,
   in any order and on any worker; meanwhile this process settles the jobs they leave
   that have finished, for a destination that settles while pushing (``_settling``);
5. collect: per destination, the jobs the run left pending.

Here, beside the push phase, the records not synced are named (they follow from the
planning alone); then the plans kept (as the in-process run keeps them, when no
destination failed), events pushed when the pipeline sends them (in this process, after
everyone's push, beside the plan tables' statistics), and the run's counts added up from
the tasks' results. A run on workers plans incrementally as a run in one process does
(``engine.plan_run``): the scope gathered here, in a temporary table of this process's
connection, is copied to the state database for the workers (``planning.cut``), and the
people it leaves out keep what the last planning found for them.

A destination is prepared once per run, in the prepare phase: a destination that can
hand what its preparation found to other processes (``crmsync.contract.PreparedOnce``)
is taken over by the workers' pushes (``loaded.destination_of``) rather than prepared
again in each of them, so the run's calls about its schema are those of one process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from crmsync.config import Config, DestinationSpec, PipelineSpec
from crmsync.contract import ConnectorContext, Destination, PreparedOnce, SettlesWhilePushing
from crmsync.diff import Policy
from crmsync.errors import ConfigError, CrmsyncError
from crmsync.phase_log import log_run_times
from crmsync.records import Stream
from crmsync.runs import DestinationReport, RunOptions, RunReport, jobs_left
from distributed import planning
from distributed.app import make_app, require_workers, share_budgets
from distributed.dispatch import Dispatch, Publish, Task
from distributed.loaded import run_context
from distributed.planning import Plan
from distributed.tasks import retry_policy
from distributed.work import (
    COLLECT,
    PLAN,
    PREPARE,
    PULL,
    PUSH,
    Work,
    collect_key,
    plan_args,
    plan_key,
    prepare_key,
    pull_key,
    push_key,
    ready_key,
)
from engine.pipeline import PipelineBusy, begin_run, context_for, run_status, send_events
from engine.plan_run import name_not_synced, report_tally
from engine.push import LEASE_SECONDS, Pusher
from engine.threads import beside
from state.first_load import restore_indexes
from state.store import Store
from state.work_queue import add_tasks, cut_batches, finish, forget_run, run_scope_keys, stopped

__all__ = ["run_on_workers"]

log = logging.getLogger(__name__)


def run_on_workers(
    config: Config,
    spec: PipelineSpec,
    store: Store,
    options: RunOptions,
    *,
    send: Publish | None = None,
) -> RunReport:
    """Runs ``spec`` once on Celery workers (``send`` hands each task to the broker)."""
    settings = require_workers(config)
    if options.dry_run:
        raise CrmsyncError("a dry run (`crmsync plan`) plans in one process, not on workers")
    if options.events and not spec.settings.events:
        raise ConfigError(
            f"pipeline {spec.name!r} sends no events: set events = true in "
            f"[pipelines.{spec.name}] before backfilling them"
        )
    as_of = (options.as_of or datetime.now(UTC)).astimezone(UTC)
    report = RunReport(spec.name, None, options.kind, False, as_of)
    holder = store.acquire_lease(f"pipeline:{spec.name}", LEASE_SECONDS)
    if holder is None:
        raise PipelineBusy(f"pipeline {spec.name!r} is already running in another process")
    try:
        policy = begin_run(store, spec, options, report, as_of)
        assert report.run_id is not None
        work = Work(config_root(config), config.store, spec.name, report.run_id)
        lease = (spec.name, holder)
        share_budgets(settings)  # the events this process sends draw on it too
        app = make_app(settings)
        dispatch = Dispatch(app, settings, store, work, lease, send, options.progress)
        _Run(config, spec, store, options, report, dispatch).go(policy, as_of)
        report.status = run_status(report)
    except BaseException as exc:
        raised = report.ended_by(exc)
        if raised is not exc:
            raise raised from None
        raise
    finally:
        report.stages.stop()
        log_run_times(spec.name, report.status, report.stages)
        if report.run_id is not None:
            store.finish_run(report.run_id, report.status, report.counts(), report.error)
            with store.transaction() as conn:  # after the run ended: late tasks skip
                forget_run(conn, report.run_id)
        store.release_lease(f"pipeline:{spec.name}", holder)
    return report


def config_root(config: Config) -> str:
    """The path every worker loads: the file, or the directory of a store."""
    path = config.path.resolve()
    return str(path.parent if config.store else path)


class _Run:
    def __init__(
        self,
        config: Config,
        spec: PipelineSpec,
        store: Store,
        options: RunOptions,
        report: RunReport,
        dispatch: Dispatch,
    ) -> None:
        self.config, self.spec, self.store = config, spec, store
        self.options, self.report, self.dispatch = options, report, dispatch
        self.work = dispatch.work.as_dict()
        self.max_batch: dict[str, int] = {}
        self.prepared: dict[str, dict[str, Any]] = {}  # what each preparation found

    def go(self, policy: Policy, as_of: datetime) -> None:
        stages, report = self.report.stages, self.report
        if self.options.pull:
            with stages.time("pull"):
                self.pull(as_of)
            # a worker killed during a first load left that table's indexes dropped, and
            # its task, delivered again, loaded the rest into a table no longer empty
            restore_indexes(self.store.engine)
            staged = sum(stats.get("staged", 0) for stats in report.pulled.values())
            self.store.refresh_statistics("staging", changed=staged)
        with stages.time("prepare"):
            self.prepare()
        with stages.time("plan"):
            plan = self.plan(policy, as_of)
        # named while the workers push, as a run in one process names them while its
        # last batches are pushed: the names follow from the planning alone
        assert report.run_id is not None
        scope = run_scope_keys(report.run_id) if plan.reason is None else None
        name = partial(
            name_not_synced,
            self.store,
            self.spec,
            plan.ctx,
            plan.tally,
            self.options,
            report,
            plan.kept,
            scope,
        )
        try:
            with beside(name, "crmsync-names") as named:
                with stages.time("push"):
                    self.push(plan)
                named.result()  # raises what naming raised
            if not any(d.error for d in report.destinations.values()):
                assert report.run_id is not None
                planning.keep(self.store, self.spec, report.run_id, plan)
        finally:
            report_tally(report, plan.tally, self.spec.currency, self.options.samples)
        # rows written: the answers, and the plans of the people planned again; the
        # database's upkeep (``Store.after_run``) beside the collect and the events, as in
        # one process
        answered = sum(d.counts["ok"] for d in report.destinations.values())
        planned = report.profiles - report.profiles_kept
        upkeep = partial(self.store.after_run, changed=max(answered, planned))
        with beside(upkeep, "crmsync-statistics") as kept_up:
            with stages.time("collect"):
                self.collect()
            if self.spec.settings.events:
                with stages.time("events"):
                    self.events()
            kept_up.result()  # raises what the statistics or the copy raised

    # -- pull -------------------------------------------------------------------------

    def pull(self, as_of: datetime) -> None:
        until = min(datetime.now(UTC), as_of) if self.options.as_of else datetime.now(UTC)
        streams: list[tuple[str, str]] = []
        for spec in self.spec.sources:
            instance = spec.cls(spec.config, context_for(self.config, spec.name))
            try:
                streams += [(spec.name, stream.value) for stream in instance.streams()]
            finally:
                instance.close()

        def task(source: str, stream: str) -> Task:
            kwargs = {"source": source, "stream": stream, "until": until.isoformat()}
            return Task(
                pull_key(source, stream), PULL, self._args(full=self.options.full, **kwargs)
            )

        people = [task(*s) for s in streams if s[1] == Stream.CUSTOMERS]
        rows = self.dispatch.run("pull customers", people)
        rest = [task(*s) for s in streams if s[1] != Stream.CUSTOMERS]
        rows.update(self.dispatch.run("pull orders and carts", rest))
        for source, stream in streams:
            self.report.pulled.update(rows[pull_key(source, stream)].result)

    # -- prepare ------------------------------------------------------------------------

    def prepare(self) -> None:
        for dest in self.spec.destinations:
            self.report.destinations[dest.name] = DestinationReport(dest.name, dest.kind)
        tasks = [
            Task(prepare_key(d.name), PREPARE, self._args(destination=d.name))
            for d in self.spec.destinations
        ]
        rows = self.dispatch.run("prepare", tasks)
        for dest in self.spec.destinations:
            result = rows[prepare_key(dest.name)].result
            self.report.consent_read[dest.name] = int(result["consent_read"])
            self.max_batch[dest.name] = int(result["max_batch"])
            if isinstance(result.get("prepared"), dict):
                self.prepared[dest.name] = result["prepared"]
            self._answered(self.report.destinations[dest.name], result)

    # -- plan ---------------------------------------------------------------------------

    def plan(self, policy: Policy, as_of: datetime) -> Plan:
        spec, options = self.spec, self.options
        people = self.config.settings.celery.people_per_slice
        backfill = options.kind == "backfill" or options.full
        assert self.report.run_id is not None
        plan = planning.cut(
            self.store,
            spec,
            as_of,
            people,
            backfill=backfill,
            run_id=self.report.run_id,
            now=policy.now_ms,
        )
        self.report.planning = plan.planning
        args = plan_args(
            policy, as_of, options.samples, plan.marks.fingerprint, scoped=plan.reason is None
        ).as_dict()
        tasks = [
            Task(plan_key(i), PLAN, self._args(part=i, low=r.low, high=r.high, plan=args))
            for i, r in enumerate(plan.slices)
        ]
        rows = self.dispatch.run("plan", tasks)
        results = [rows[plan_key(i)].result for i in range(len(plan.slices))]
        planning.add_up(plan, results, [d.name for d in spec.destinations], options.samples)
        self.report.profiles_kept = plan.kept.people
        return plan

    # -- push ---------------------------------------------------------------------------

    def ready(self, plan: Plan) -> None:
        """Makes ready, once and here, the groups each destination's changes name
        (``PreparedOnce.expect``), on an instance that takes over what the preparation
        found, and records what it knows then for the workers' pushes to take over: they
        add none themselves, so no two processes write them at once. Where this fails,
        the pushes add what they need as they meet it."""
        assert self.report.run_id is not None
        for dest in self.spec.destinations:
            found = self.prepared.get(dest.name)
            groups = plan.groups.get(dest.name)
            if found is None or not groups or self.report.destinations[dest.name].error:
                continue
            instance = dest.cls(dest.config, context_for(self.config, dest.name))
            try:
                now = _made_ready(instance, found, groups)
            except CrmsyncError as exc:
                self.report.warnings.append(
                    f"{dest.name}: its groups were not made ready before the pushes, which "
                    f"add them as they need them: {exc}"
                )
                continue
            finally:
                instance.close()
            if now is not None and now != found:
                self.prepared[dest.name] = now
                key = ready_key(dest.name)
                with self.store.transaction() as conn:
                    add_tasks(conn, self.report.run_id, [key])
                    finish(conn, self.report.run_id, key, {"prepared": now})

    def push(self, plan: Plan) -> None:
        self.ready(plan)
        tasks: list[tuple[int, int, Task]] = []
        for order, dest in enumerate(self.spec.destinations):
            answered = self.report.destinations[dest.name]
            if answered.error:  # stopped before planning: nothing of it is sent this run
                answered.counts["not_sent"] += sum(c.get(dest.name, 0) for c in plan.changes)
                continue
            # batches run across the slices, in key order: every one full but the last
            counts = [c.get(dest.name, 0) for c in plan.changes]
            for batch, segments in enumerate(cut_batches(counts, self.max_batch[dest.name])):
                part = segments[0][0]
                kwargs = self._args(
                    destination=dest.name, part=part, batch=batch, segments=segments
                )
                key = push_key(dest.name, part, batch)
                tasks.append((batch, order, Task(key, PUSH, kwargs)))
        tasks.sort(key=lambda t: t[:2])  # destinations side by side, batches in key order
        with self._settling():
            rows = self.dispatch.run("push", [t[2] for t in tasks])
        for *_, task in tasks:
            name = task.kwargs["destination"]
            self.report.destinations[name].counts.update(rows[task.key].result["counts"])
        assert self.report.run_id is not None
        with self.store.engine.connect() as conn:
            for dest in self.spec.destinations:
                answered = self.report.destinations[dest.name]
                halted = stopped(conn, self.report.run_id, dest.name)
                if halted is not None and answered.error is None:
                    answered.error, answered.full = halted

    @contextmanager
    def _settling(self) -> Iterator[None]:
        """While the workers push: each destination that settles while pushing
        (``SettlesWhilePushing``) has its finished jobs settled here, a pass every few
        seconds, as a run in one process settles them beside its own pushes, so what
        settling costs at the vendor is spent while later batches still go out. Only
        this process collects until the pushes are over, and the collect task only
        after: no job is settled by two processes at once. The instance here holds its
        membership moves with the workers' (``loaded.run_context``)."""
        assert self.report.run_id is not None
        with ExitStack() as stack:
            for dest in self.spec.destinations:
                answered = self.report.destinations[dest.name]
                if answered.error or not issubclass(dest.cls, SettlesWhilePushing):
                    continue
                context = run_context(self.config, dest.name, self.store.engine, self.report.run_id)
                try:
                    instance = stack.enter_context(
                        _opened(self.config, dest, self.prepared.get(dest.name), context)
                    )
                except CrmsyncError as exc:  # the pushes meet it too; the collect settles
                    log.warning("%s: its jobs are settled after the pushes: %s", dest.name, exc)
                    continue
                pusher = Pusher(
                    dest.name,
                    instance,
                    self.store,
                    answered,
                    self.options,
                    self.report.run_id,
                    retry_policy(self.spec),
                    settle_while_pushing=True,
                )
                stack.enter_context(pusher.settling())
            yield

    # -- collect and events ------------------------------------------------------------

    def collect(self) -> None:
        wait = self.options.job_wait_seconds
        tasks = [
            Task(collect_key(d.name), COLLECT, self._args(destination=d.name, wait_seconds=wait))
            for d in self.spec.destinations
        ]
        rows = self.dispatch.run("collect", tasks, longest=wait)
        for dest in self.spec.destinations:
            result = rows[collect_key(dest.name)].result
            self._answered(self.report.destinations[dest.name], result)
            if result["running"]:
                self.report.warnings.append(jobs_left(dest.name, result["running"], wait))

    def events(self) -> None:
        """The run's events, from this process, after everyone's push (as in one process)."""
        retry = retry_policy(self.spec)
        with ExitStack() as stack:
            pushers = [self._pusher(d.name, stack) for d in self.spec.destinations]
            send_events(self.store, self.spec, pushers, self.options, self.report, retry)

    def _pusher(self, name: str, stack: ExitStack) -> Pusher:
        dest = next(d for d in self.spec.destinations if d.name == name)
        instance = stack.enter_context(_opened(self.config, dest, self.prepared.get(name)))
        return Pusher(
            name,
            instance,
            self.store,
            self.report.destinations[name],
            self.options,
            self.report.run_id,
            retry_policy(self.spec),
        )

    # -- helpers ------------------------------------------------------------------------

    def _args(self, **kwargs: object) -> dict[str, object]:
        return {"work": self.work, **kwargs}

    @staticmethod
    def _answered(report: DestinationReport, result: dict[str, object]) -> None:
        """Adds a task's answers to the destination's report; its first error stays."""
        counts = result.get("counts")
        if isinstance(counts, dict):
            report.counts.update(counts)
        error = result.get("error")
        if error and report.error is None:
            report.error, report.full = str(error), bool(result.get("full"))


def _made_ready(
    instance: Destination, found: dict[str, Any], groups: set[str]
) -> dict[str, Any] | None:
    """What the destination knows once ``groups`` are ready (None: it cannot tell)."""
    if not isinstance(instance, PreparedOnce):
        return None
    instance.adopt(found)
    instance.expect(sorted(groups))
    return instance.prepared()


@contextmanager
def _opened(
    config: Config,
    dest: DestinationSpec,
    found: dict[str, Any] | None,
    context: ConnectorContext | None = None,
) -> Iterator[Destination]:
    """The destination (in ``context``, else its own), taking over what the run's
    preparation ``found`` where it can (``PreparedOnce``), else prepared again."""
    context = context or context_for(config, dest.name)
    instance: Destination = dest.cls(dest.config, context)
    try:
        if found is not None and isinstance(instance, PreparedOnce):
            instance.adopt(found)
        else:
            instance.prepare(dest.mapping.field_specs())
        yield instance
    finally:
        instance.close()
