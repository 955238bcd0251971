"""One run's bulk import jobs: a push's last, part-filled job waits for the next push.

Klaviyo takes at most 10,000 profiles and 5 MB per import job, and the core pushes at
most 10,000 changes at a time. A push whose profiles take more than the 5 MB therefore
needs two jobs, the second part-filled; cut push by push, a run pays that remainder in
every such push, and its last short push opens a job of its own besides (10,409 people
of some 550 bytes: three jobs where two hold them). So the last job of a push cut in
several is held instead, and the next push sends it at the head of its own first job:
the run's upserts are cut as one ordered stream, each job as full as both caps allow,
which for that order is the fewest jobs. At most one job's worth is ever held.

The ledger stays honest through the contract's pending results: the held people are
PENDING on the hold (``imports:<token>:<n>``). Their hold's ``collect`` hands them on,
PENDING on the job that took them; a hold nothing took by the end of the run is sent
when the core collects it then. Until a hold sent in a job has been collected, that
job's ``collect`` answers None (still running), so that it is settled with the held
people in it rather than before they were handed on to it. A hold this process does not
know (a run that stopped before its end, or an earlier run's) has its people's profiles
rebuilt from their changes and sent again: importing a profile twice is harmless.

Only a run that one process pushes and collects holds (the context has no ``SharedMoves``):
on Celery workers another process collects, which could not tell a hold sent in a later
push from one never sent, and would import its people a second time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from connectors.kit.chunks import chunked, send_chunks
from connectors.klaviyo.config import JobLimits
from connectors.klaviyo.jobs import identity, sent_phone
from connectors.klaviyo.payloads import job_bytes_available
from crmsync.contract import Change, Outcome, PushResult

HELD_JOB = "imports:"  # a hold's prefix; the core collects holds first (``collected_first``)
NOT_SENT = "held for a fuller import job that was never sent"
Entries = dict[str, dict[str, Any]]  # person key -> profile resource
Sizes = dict[str, int]  # person key -> bytes of the profile in a job (payloads.size_of)
Start = Callable[[Sequence[Change], Entries], list[PushResult]]  # one job: imports.start_job
# the upserts to send, their entries and sizes, and the answers of those screened out
Prepared = tuple[list[Change], Entries, Sizes, dict[str, PushResult]]
Prepare = Callable[[Sequence[Change]], Prepared]


@dataclass(frozen=True, slots=True)
class _Hold:
    """The last job of a push, not sent yet: its people, in order, and their profiles."""

    name: str
    changes: list[Change]
    entries: Entries
    sizes: Sizes


@dataclass(frozen=True, slots=True)
class _Sent:
    """Where a hold went: the job that took its people, and those answered otherwise."""

    job: str | None
    others: dict[str, PushResult]


class RunImports:
    """Cuts one run's upserts into import jobs; holds a push's last job when ``hold``."""

    def __init__(
        self, start: Start, prepare: Prepare, limits: JobLimits, pool: Executor, *, hold: bool
    ) -> None:
        self._start, self._prepare, self._limits, self._pool = start, prepare, limits, pool
        self._may_hold = hold
        self._token = uuid.uuid4().hex
        self._holds = 0  # holds made so far, numbering their names
        self._hold: _Hold | None = None
        self._sent: dict[str, _Sent] = {}  # hold -> where it went, until it is collected
        self._waiting: dict[str, set[str]] = {}  # job -> holds sent in it, not collected
        # import jobs and holds of this run not collected yet: the run's list job waits
        self.open: set[str] = set()
        self._lock = threading.Lock()  # a push and a collect could overlap

    @property
    def holding(self) -> bool:
        """Whether a job is held: the next push's upserts join it, however few."""
        return self._hold is not None

    def send(
        self, upserts: Sequence[Change], entries: Entries, sizes: Sizes
    ) -> dict[str, PushResult]:
        """Sends what is held and these upserts in the fewest jobs, holding the last one
        when the push was cut in several and it is not full; one answer per upsert.

        Raises ``TransientError`` when every job failed transiently (Klaviyo is down):
        what was held stays held.
        """
        with self._lock:
            hold, self._hold = self._hold, None
            try:
                return self._send(hold, upserts, entries, sizes)
            except BaseException:
                self._hold = hold  # nothing of it was taken
                raise

    def _send(
        self, hold: _Hold | None, upserts: Sequence[Change], entries: Entries, sizes: Sizes
    ) -> dict[str, PushResult]:
        if hold is None:
            chunks = self._cut(upserts, sizes)
        else:
            entries, sizes = {**hold.entries, **entries}, {**hold.sizes, **sizes}
            if _clash(hold.changes, upserts):
                # two people with one e-mail or phone in one job would be merged into one
                # profile by Klaviyo: the held job goes alone
                chunks = [hold.changes, *self._cut(upserts, sizes)]
            else:
                chunks = self._cut([*hold.changes, *upserts], sizes)
        kept: list[Change] | None = None
        if self._may_hold and len(chunks) > 1 and len(chunks[-1]) < self._limits.profiles_per_job:
            kept = chunks.pop()
        answers = self._jobs(chunks, entries)
        if hold is not None:
            found = self._went(hold, answers)
            if found.job is not None:
                self._waiting.setdefault(found.job, set()).add(hold.name)
        if kept is not None:
            self._holds += 1
            name = f"{HELD_JOB}{self._token}:{self._holds}"
            keys = [c.person_key for c in kept]
            self._hold = _Hold(
                name, kept, {k: entries[k] for k in keys}, {k: sizes[k] for k in keys}
            )
            self.open.add(name)
            answers.update((k, PushResult(k, Outcome.PENDING, job=name)) for k in keys)
        return {c.person_key: answers[c.person_key] for c in upserts}

    def holds(self, name: str) -> bool:
        """Whether ``name`` is the job held now, which the next push would fill."""
        with self._lock:
            return self._hold is not None and self._hold.name == name

    def waits(self, job: str) -> bool:
        """Whether ``job`` took a hold whose people are not handed on to it yet."""
        with self._lock:
            return bool(self._waiting.get(job))

    def collected(self, job: str) -> None:
        """``job`` has been settled."""
        with self._lock:
            self.open.discard(job)

    def collect(self, name: str, changes: Sequence[Change]) -> list[PushResult]:
        """The answers of a hold's people (any page of them): PENDING on the job that took
        them, sent now when nothing did, or sent again when this process never held them.

        Raises ``TransientError`` when Klaviyo is down: they stay PENDING on the hold.
        """
        with self._lock:
            hold = self._hold
            if hold is not None and hold.name == name:
                self._went(hold, self._jobs([hold.changes], hold.entries))
                self._hold = None
            found = self._sent.pop(name, None)
            if found is None:
                results = self._again(changes)
            else:
                results = [_answer(found, c.person_key) for c in changes]
                if found.job is not None:
                    self._waiting.get(found.job, set()).discard(name)
                    if not self._waiting.get(found.job, True):
                        del self._waiting[found.job]
            self.open.discard(name)
            return results

    def _again(self, changes: Sequence[Change]) -> list[PushResult]:
        upserts, entries, sizes, answers = self._prepare(changes)
        answers.update(self._jobs(self._cut(upserts, sizes), entries))
        return [answers[c.person_key] for c in changes]

    def _cut(self, changes: Sequence[Change], sizes: Mapping[str, int]) -> list[list[Change]]:
        return chunked(
            changes,
            self._limits.profiles_per_job,
            max_bytes=job_bytes_available(self._limits.bytes_per_job),
            size_of=lambda change: sizes[change.person_key],
        )

    def _jobs(self, chunks: Sequence[Sequence[Change]], entries: Entries) -> dict[str, PushResult]:
        """Starts a job per chunk, side by side; one answer per person."""
        if not chunks:
            return {}
        sent = send_chunks(
            chunks, lambda chunk: self._start(chunk, entries), self._pool, name="Klaviyo"
        )
        self.open.update(r.job for r in sent if r.job is not None)
        return {r.person_key: r for r in sent}

    def _went(self, hold: _Hold, answers: Mapping[str, PushResult]) -> _Sent:
        """Keeps where the hold's people went, for the hold's collect."""
        mine = [answers[c.person_key] for c in hold.changes]
        job = next((r.job for r in mine if r.outcome is Outcome.PENDING and r.job), None)
        others = {
            r.person_key: r for r in mine if not (r.outcome is Outcome.PENDING and r.job == job)
        }
        found = _Sent(job, others)
        self._sent[hold.name] = found
        return found


def _answer(found: _Sent, key: str) -> PushResult:
    known = found.others.get(key)
    if known is not None:
        return known
    if found.job is None:
        return PushResult(key, Outcome.FAILED, message=NOT_SENT)
    return PushResult(key, Outcome.PENDING, job=found.job)


def _clash(held: Sequence[Change], upserts: Sequence[Change]) -> bool:
    """Whether an upsert has the e-mail or phone number of a held person."""
    known = {i for c in held for i in _identities(c)}
    return any(i in known for c in upserts for i in _identities(c))


def _identities(change: Change) -> list[str]:
    found = (identity(change.email, None), identity(None, sent_phone(change)))
    return [i for i in found if i is not None]
