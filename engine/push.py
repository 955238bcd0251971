"""Push and acknowledge: changes go to a destination a batch at a time, and what it answers
goes to the ledger.

Per batch, in this order: the changes are recorded as in flight (one transaction), the
destination is called, and its answers are recorded (one transaction): acknowledgements
move into the ledger, pending ones stay in flight with their job, refusals become
failures, and changes the destination did not send (NOT_SENT: it can take no more now)
are released for the next run with no attempt charged. A crash before the answers are
recorded leaves the batch in flight, which the next run's diff treats as "may be
applied"; re-sending it is the same idempotent upsert.

Batches are sent by a thread of their own per destination, so planning goes on while a
batch is on the wire. Between the planner and that thread sits a queue of at most
``QUEUED_BATCHES`` batches: memory stays bounded, and a planner faster than the vendor
waits for it instead of piling changes up. The answers are recorded by a second thread,
so that batch N's ledger write overlaps batch N+1's push (each batch is still marked in
flight before it is sent, by the sender, and recorded only after it was answered); at
most one answered batch waits for it. A destination whose ``push`` may be called from
several threads says how many batches may be on the wire at once (``pushes_at_once``):
that many senders then take batches from the queue, so one batch's calls fill the
connections while another is marked in flight or waits for its last calls; a crash then
leaves up to that many batches in flight, each re-sent as the same idempotent change.

Pending jobs (destinations with asynchronous imports) are collected at the start of each
run and at its end, waiting there up to ``RunOptions.job_wait_seconds``. A destination
that settles while pushing (``SettlesWhilePushing``) also has its finished jobs collected
while the run pushes (its ``collect_early``), by a collector thread from the first batch
on, a pass every ``_COLLECT_EVERY`` seconds, so settling them at the vendor overlaps the
later pushes; ``flush`` stops it before the run's final collect. On workers the
coordinator runs the same passes while the workers push (``settling``). A destination
whose ``collect`` may run on several threads (``collects_at_once``) has that many jobs
looked at side by side in a pass, so one job's settling calls fill the connections while
another's wait on a narrower limit of the vendor's. A pass takes the jobs in the order of
their ids, but those the destination collects first (``collected_first``) before every
other, and those it collects last (``collected_last``: a run-wide job that the others
hand people on to) once every other has been looked at.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy.pool import SingletonThreadPool, StaticPool

from crmsync.contract import Change, Destination, Outcome, PushResult, SettlesWhilePushing
from crmsync.errors import ConfigError, ConnectorError, SendLater
from crmsync.progress import push_stage
from crmsync.runs import DestinationReport, RunOptions
from crmsync.stopwatch import Stopwatch
from engine.threads import started
from state.ledger import RetryPolicy, job_pages, mark_in_flight, pending_job_ids, record_results
from state.store import Store
from state.timeutil import now_ms

LEASE_SECONDS = 15 * 60
QUEUED_BATCHES = 2  # batches waiting for the sender, besides the one it is pushing
_POLL_FIRST, _POLL_MAX = 0.5, 10.0  # seconds between looks at pending jobs while waiting
_COLLECT_EVERY = 2.0  # seconds between the collector's passes while the run pushes

Answered = tuple[Sequence[Change], Sequence[PushResult]]  # a batch sent, and its answers
Collect = Callable[[str, Sequence[Change]], "list[PushResult] | None"]  # collect or collect_early


def collect_order(
    jobs: Iterable[str], first: tuple[str, ...] = (), last: tuple[str, ...] = ()
) -> list[str]:
    """``jobs`` in the order a collect pass looks at them: by id, as Python orders text
    (a database's collation may put ``Zx`` after ``lists:``), except that those whose id
    starts with one of ``first`` come before every other, and those with one of ``last``
    after every other."""

    def rank(job: str) -> tuple[int, str]:
        return (0 if job.startswith(first) else 2 if job.startswith(last) else 1, job)

    return sorted(jobs, key=rank)


def _prefixes(destination: Destination, name: str) -> tuple[str, ...]:
    return tuple(str(prefix) for prefix in getattr(destination, name, ()))


class _Pass:
    """What one collect pass found, from as many threads as it has: the jobs still
    running, the jobs people were handed on to, and the ``ConnectorError`` that ended it
    with the jobs it left (that one among them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: set[str] = set()
        self.handed_on: set[str] = set()
        self.failure: ConnectorError | None = None
        self.left = 0
        self._halted = False  # something other than a ``ConnectorError`` was raised

    def over(self) -> bool:
        return self.failure is not None or self._halted

    def halt(self) -> None:
        self._halted = True

    def count_running(self, job: str) -> None:
        with self._lock:
            self.running.add(job)

    def hand_on(self, jobs: Iterable[str]) -> None:
        with self._lock:
            self.handed_on.update(jobs)

    def fail(self, exc: ConnectorError) -> None:
        with self._lock:
            self.failure = self.failure or exc
            self.left += 1

    def count_left(self) -> None:
        with self._lock:
            self.left += 1


class Pusher:
    """Collects one destination's changes and pushes them a batch at a time.

    Changes are batched per slice of the key space (``part``; a run in one process has
    one), each slice's batches cut at fixed positions from its first change. So batches
    never depend on how worker processes interleave, and a re-run after a crash, which
    skips the acknowledged people (whole batches), rebuilds exactly the batches the
    crashed run had not acknowledged: the outbox's content-addressed files then replace
    themselves instead of holding a person twice.

    The batches are pushed in the order they were cut, by one sender thread (or, for a
    destination with ``pushes_at_once``, that many, each taking the next batch), so
    pushing overlaps with planning, and their answers are recorded by one recorder
    thread while the next batch is pushed. ``flush()`` waits until
    everything has been pushed and recorded, and stops both threads. An error either
    cannot classify (a bug, a state database error) is raised in the planner's thread by
    the next ``add`` or ``flush``; a ``ConfigError`` or ``ConnectorError`` stops sending
    to this destination for the rest of the run, and every change not sent by then is
    counted as ``not_sent``. So does a destination that can take no more now: it raises
    ``SendLater`` (nothing of the batch was sent) or answers NOT_SENT for the changes it
    did not send; those are ``not_sent`` too, and cost nobody a retry attempt. A state
    database the threads cannot share (SQLite in memory) is pushed to and recorded from
    the planner's thread, as before.
    """

    def __init__(
        self,
        name: str,
        destination: Destination,
        store: Store,
        report: DestinationReport,
        options: RunOptions,
        run_id: int | None,
        retry: RetryPolicy,
        lease: tuple[str, str] | None = None,
        stages: Stopwatch | None = None,
        *,
        settle_while_pushing: bool = False,
    ) -> None:
        self.name, self.destination, self.store = name, destination, store
        self.report, self.options, self.run_id, self.retry = report, options, run_id, retry
        self.pending: dict[int, list[Change]] = {}  # slice -> its changes not yet pushed
        self.lease = lease  # (pipeline, holder) to renew per batch
        self.stages = stages or Stopwatch()  # where the time goes: pushing and the ledger
        self._counts = threading.Lock()  # report.counts is updated from both threads
        self._queue: queue.Queue[list[Change] | None] = queue.Queue(QUEUED_BATCHES)
        # batches on the wire at once: one, unless the destination's push may be called
        # from several threads (``pushes_at_once``; its calls then share its connections)
        self._width = max(1, int(getattr(destination, "pushes_at_once", 1)))
        self._senders: list[threading.Thread] = []
        self._answered: queue.Queue[Answered | None] = queue.Queue(1)
        self._recorder: threading.Thread | None = None
        # the sender's and the recorder's transactions take turns: SQLite has one writer,
        # and its busy handler would sleep where a lock hands over at once
        self._writing = threading.Lock()
        self._failure: BaseException | None = None  # what stopped the sender, to re-raise
        # settles finished jobs while the run pushes (``SettlesWhilePushing``): the run's
        # own pusher, in one process; on workers the coordinator's (``settling``), never
        # a worker's push task's
        self._settles = settle_while_pushing and isinstance(destination, SettlesWhilePushing)
        self._collector: threading.Thread | None = None
        self._pushing_over = threading.Event()
        self._dropping = False  # close(): queued batches are dropped, not pushed
        # An in-memory SQLite database exists once per connection, and its pool hands
        # each thread its own connection: a sender thread would see an empty database.
        self._threaded = not isinstance(store.engine.pool, SingletonThreadPool | StaticPool)
        # jobs looked at side by side in a collect pass: one, unless the destination's
        # collect may run on several threads (``collects_at_once``: one job's settling
        # calls then fill the connections while another's wait on a narrower limit)
        at_once = max(1, int(getattr(destination, "collects_at_once", 1)))
        self._collect_width = at_once if self._threaded else 1
        # id prefixes of the jobs a pass looks at before and after every other
        self._first = _prefixes(destination, "collected_first")
        self._last = _prefixes(destination, "collected_last")

    def add(self, change: Change, part: int = 0) -> None:
        self._raise_failure()
        if self.report.error:
            self._count("not_sent", 1)
            return
        pending = self.pending.setdefault(part, [])
        pending.append(change)
        if len(pending) >= self.destination.max_batch:
            self._submit(self.pending.pop(part))

    def hand_over(self) -> None:
        """Hands over what is pending of every slice, in order, without waiting for it to
        be pushed (``flush`` waits)."""
        for each in sorted(self.pending):
            self._submit(self.pending.pop(each, []))
        self._raise_failure()

    def flush(self, part: int | None = None) -> None:
        """Hands over what is pending of slice ``part`` (of every slice, in order, when
        None); with None it also waits until everything handed over has been pushed."""
        parts = sorted(self.pending) if part is None else [part]
        for each in parts:
            self._submit(self.pending.pop(each, []))
        if part is None:
            self._stop()
            self._stop_collector()
            self.options.progress.finish(push_stage(self.name))
        self._raise_failure()

    def close(self) -> None:
        """Stops the sender without pushing what is still queued (a run that failed while
        planning): those batches were never marked in flight, so nothing is lost."""
        self._dropping = True
        self._stop()
        self._stop_collector()

    @contextmanager
    def settling(self) -> Iterator[None]:
        """Settles the destination's finished jobs while other processes push to it (a
        run on workers: the coordinator, while the workers' push tasks run), a pass
        every ``_COLLECT_EVERY`` seconds, as the collector thread does beside this
        Pusher's own pushes; on exit the passes stop, and what failed in one is raised
        (a destination that failed stops the passes; the final collect reports it)."""
        if not self._settles or not self._threaded:
            yield
            return
        self._start_collector()
        try:
            yield
        finally:
            self._stop_collector()
        self._raise_failure()

    def _submit(self, batch: list[Change]) -> None:
        if not batch or self.options.dry_run:
            return
        self.options.progress.grow(push_stage(self.name), len(batch))
        if not self._threaded:
            self._push(batch)
            return
        if not self._senders:
            self._dropping = False
            self._recorder = started(self._record_loop, f"record-{self.name}")
            self._senders = [
                started(self._send_loop, f"push-{self.name}" + (f"-{n}" if n else ""))
                for n in range(self._width)
            ]
            if self._settles and self._collector is None:
                self._start_collector()
        self._queue.put(batch)  # waits while the queue is full: the vendor sets the pace

    def _send_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._failure is None and not self._dropping:
                try:
                    self._push(batch)
                except BaseException as exc:  # handed to the planner's thread, raised there
                    self._failure = exc

    def _record_loop(self) -> None:
        """Records each answered batch, even after a failure elsewhere: it was sent."""
        while True:
            answered = self._answered.get()
            if answered is None:
                return
            try:
                self._acknowledge(*answered)
            except BaseException as exc:  # handed to the planner's thread, raised there
                self._failure = self._failure or exc

    def _collect_loop(self) -> None:
        """One collect pass every ``_COLLECT_EVERY`` seconds until the pushes are over;
        a failure stops the passes and is raised in the planner's thread, like the
        sender's."""
        while not self._pushing_over.wait(_COLLECT_EVERY):
            if self._failure is not None or self.report.error:
                return
            try:
                self.collect(early=True)
            except BaseException as exc:  # handed to the planner's thread, raised there
                self._failure = self._failure or exc
                return

    def _start_collector(self) -> None:
        self._pushing_over.clear()
        self._collector = started(self._collect_loop, f"collect-{self.name}")

    def _stop_collector(self) -> None:
        collector, self._collector = self._collector, None
        if collector is not None:
            self._pushing_over.set()
            collector.join()

    def _stop(self) -> None:
        senders, self._senders = self._senders, []
        for _ in senders:
            self._queue.put(None)  # one end for each: a sender takes one and leaves
        for sender in senders:
            sender.join()
        recorder, self._recorder = self._recorder, None
        if recorder is not None:  # after the sender: it hands over its last answers first
            self._answered.put(None)
            recorder.join()

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            self._dropping = True  # what is still queued stays unsent: the run is failing
            self._failure = None
            raise failure

    def _push(self, batch: list[Change]) -> None:
        if self.report.error:  # the destination stopped while this batch waited
            self._count("not_sent", len(batch))
            return
        stages = self.stages
        with stages.time("ledger"), self._writing, self.store.transaction() as conn:
            mark_in_flight(conn, self.name, self.run_id, batch, now_ms())
        try:
            with stages.time(f"push.{self.name}"):
                results = self.destination.push(batch)
        except SendLater as exc:
            # nothing of the batch was sent, and nothing more can be: kept for a later
            # run, no attempt charged, and nothing more sent to it in this run
            self.report.error = str(exc)
            self.report.full = True
            results = [PushResult(c.person_key, Outcome.NOT_SENT, message=str(exc)) for c in batch]
        except (ConfigError, ConnectorError) as exc:  # AuthError is a ConnectorError
            # refused or down: keep the batch as failed (retried next run) and stop
            # sending to this destination for the rest of this run
            self.report.error = str(exc)
            results = [PushResult(c.person_key, Outcome.FAILED, message=str(exc)) for c in batch]
        else:
            self._stop_when_full(results)
        if self.lease is not None:
            self.store.renew_lease(f"pipeline:{self.lease[0]}", self.lease[1], LEASE_SECONDS)
        if self._recorder is not None:
            self._answered.put((batch, results))  # waits while the recorder is behind
        else:
            self._acknowledge(batch, results)

    def _stop_when_full(self, results: Sequence[PushResult]) -> None:
        """Results with changes NOT_SENT (a batch sent in part, a job's rest not sent)
        stop sending to the destination for the rest of the run, as ``SendLater`` does,
        with the destination's reason."""
        for result in results:
            if result.outcome is Outcome.NOT_SENT:
                if self.report.error is None:  # a failure before it stays the run's error
                    self.report.error = result.message or f"{self.name} can take no more"
                    self.report.full = True
                return

    def _acknowledge(self, batch: Sequence[Change], results: Sequence[PushResult]) -> None:
        self._record(batch, results)
        self.options.progress.advance(push_stage(self.name), len(batch))

    def _record(self, batch: Sequence[Change], results: Sequence[PushResult]) -> None:
        with self.stages.time("ledger"), self._writing, self.store.transaction() as conn:
            counts = record_results(
                conn, self.name, self.run_id, batch, results, now_ms=now_ms(), retry=self.retry
            )
        with self._counts:
            self.report.counts.update({k: v for k, v in counts.items() if v})

    def _count(self, outcome: str, n: int) -> None:
        with self._counts:
            self.report.counts[outcome] += n

    def collect(
        self,
        wait_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        early: bool = False,
    ) -> int:
        """Settles the destination's finished jobs; returns how many are still running.

        With ``wait_seconds`` it keeps looking, less often as time goes on, until every
        job is done or the time is up. A job's changes are read and settled a page at a
        time, so a job as large as a whole run (a destination that gathers its
        membership calls across the run) is settled in bounded memory. ``early``: a
        pass while the run still pushes, through ``SettlesWhilePushing.collect_early``.
        """
        collect = self.destination.collect
        if early and isinstance(self.destination, SettlesWhilePushing):
            collect = self.destination.collect_early
        deadline = time.monotonic() + wait_seconds
        pause = _POLL_FIRST
        while True:
            with self.store.engine.connect() as conn:
                jobs = pending_job_ids(conn, self.name)
            passed = self._collect_pass(jobs, collect)
            if passed.failure is not None:
                if early:  # no more early passes: the final collect reports it
                    self._pushing_over.set()
                else:
                    self.report.error = self.report.error or str(passed.failure)
                return passed.left + len(passed.running)
            # jobs that settled people were handed on to (Klaviyo's run-wide list job),
            # unseen by this pass: while waiting, they are looked at in the next one
            handed_on = passed.handed_on - set(jobs)
            if not (passed.running or handed_on) or time.monotonic() >= deadline:
                return len(passed.running) + len(handed_on)
            if passed.running:
                sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                pause = min(pause * 2, _POLL_MAX)

    def _collect_pass(self, jobs: Sequence[str], collect: Collect) -> _Pass:
        """One look at each of ``jobs`` (in ``collect_order``): side by side on up to the
        destination's ``collects_at_once`` threads, each job's pages in order on one of
        them, and the jobs it collects last (``collected_last``) only once every other
        has been looked at. A ``ConnectorError`` ends the pass: jobs not yet begun are
        left for a later one."""
        passed = _Pass()
        ordered = collect_order(jobs, self._first, self._last)
        last = [job for job in ordered if job.startswith(self._last)]
        rest = ordered[: len(ordered) - len(last)]  # the last ones come last in the order
        for group in (rest, last):
            self._collect_side_by_side(group, collect, passed)
        if passed.over():
            return passed
        # A job people were handed on to, settled in this pass, may have had its pages
        # read before they were (earlier in the pass, or while another thread's job still
        # handed them on): it is looked at once more, alone (one still running is looked
        # at in the next pass anyway).
        again = (passed.handed_on & set(jobs)) - passed.running
        for job in collect_order(again, self._first, self._last):
            self._collect_job(job, collect, passed)
        return passed

    def _collect_side_by_side(self, jobs: Sequence[str], collect: Collect, passed: _Pass) -> None:
        width = min(len(jobs), self._collect_width)
        if width <= 1:
            for job in jobs:  # after a failure, each job counts itself as left
                self._collect_job(job, collect, passed)
            return
        with ThreadPoolExecutor(width, thread_name_prefix=f"collect-{self.name}") as pool:
            for future in [pool.submit(self._collect_job, job, collect, passed) for job in jobs]:
                future.result()  # raises what no job may swallow (a bug, the database)

    def _collect_job(self, job: str, collect: Collect, passed: _Pass) -> None:
        """Settles what ``job`` has finished, a page at a time, into ``passed``, unless the
        pass is over (a failure in another job)."""
        if passed.over():
            passed.count_left()
            return
        try:
            with self.store.engine.connect() as conn:
                for changes in job_pages(conn, self.name, job):
                    try:
                        results = collect(job, changes)
                    except ConnectorError as exc:
                        passed.fail(exc)
                        return
                    if results is None:
                        passed.count_running(job)
                        return  # the job is still running: its other pages too
                    self._record(changes, results)
                    self._stop_when_full(results)
                    passed.hand_on(
                        r.job
                        for r in results
                        if r.outcome is Outcome.PENDING and r.job and r.job != job
                    )
        except BaseException:
            passed.halt()  # raised by the pass; the jobs not yet begun are not begun
            raise
