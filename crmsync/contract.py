"""The contract between the core and every connector: the values that cross it and the two
small surfaces connectors implement.

A *source* has a kind, a config model, ``check()`` and ``read(stream, since, until)``.
A *destination* has a kind, a config model, ``check(fields)``, ``prepare(fields)``,
``push(changes) -> one result per change``, ``collect(job, changes)`` for results it
gave as pending, and ``read_consent(since)``. Everything else (cursors, staging, the
diff, consent intents, the ledger and what is in flight, retries of failed records)
lives in the core, so a connector stays small and only translates.

Vocabulary:

- A *membership* is a person's place in one group the destination keeps: a Mailchimp
  tag, a Klaviyo list, a HubSpot list. The mapping names each segment's group, always
  under the destination's one owned prefix, and crmsync only ever adds people to or
  removes them from groups it owns.
- A *consent intent* is what the core decided a destination should do about one
  channel's marketing consent (see ``ConsentIntent``); destinations translate it and
  never decide consent themselves.
- A *pending* result means the destination accepted the change into an asynchronous job;
  the core keeps it as in flight and asks ``collect`` for the final result later.
- A *not sent* result means the destination can take nothing more in this run (a daily
  allowance is spent) and nothing of this change was sent: the core keeps the person for
  a later run without charging a retry attempt, and sends nothing more to the
  destination in this run. When nothing of a whole batch was sent, ``push`` may raise
  ``crmsync.errors.SendLater`` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from importlib.resources.abc import Traversable
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from crmsync.frozen import quick_init
from crmsync.records import Channel, ConsentState, Record, RecordIssue, Stream


class ConnectorConfig(BaseModel):
    """Base of every connector's config model: unknown keys are errors, so typos show."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    # the key of the group-name prefix a destination guards, when its config has one; the
    # mapping's [memberships] prefix must then be the same
    owned_prefix_key: ClassVar[str | None] = None

    def owned_prefix(self) -> str | None:
        key = self.owned_prefix_key
        return str(getattr(self, key)) if key else None


# a membership move held for a full call: (group, JOIN or LEAVE, member id as the vendor
# knows it)
HeldMove = tuple[str, str, str]
JOIN, LEAVE = "+", "-"


@runtime_checkable
class SharedMoves(Protocol):
    """Where a run's held membership moves wait for a full call when more than one
    process pushes the run (Celery workers): every process of the run sees the same
    moves, under one job, so the run's calls are those of a run in one process.

    A destination that holds moves across a run gets one in its context (``moves``) for
    the run; without one it holds them in its own memory.
    """

    @property
    def token(self) -> str:
        """The run's own token, the same in every process of the run (for its job)."""
        ...

    def exchange(
        self,
        moves: Sequence[HeldMove],
        take: Callable[[list[HeldMove]], list[HeldMove]],
        *,
        everything: bool = False,
    ) -> list[HeldMove]:
        """In one transaction, one process at a time: holds ``moves`` (a move held
        already, even one being sent, waits again), loads what is held in their groups
        that no process is sending (``everything``: in every group, being sent or not),
        oldest first, and marks as being sent what ``take`` picks of it; returns that."""
        ...

    def sent(self, moves: Sequence[HeldMove]) -> None:
        """Forgets these moves: their calls went out (or failed)."""
        ...

    def fail(self, reasons: Mapping[str, str]) -> None:
        """Keeps why a move of each of these members failed, for the run's job."""
        ...

    def failures(self) -> dict[str, str]:
        """Every failure kept for the run's job, by member."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the core hands every connector besides its own config."""

    name: str  # the connector's name in the configuration, e.g. "store_eu"
    config_dir: Path  # relative paths in the config are relative to this
    default_region: str = "TR"  # for phone numbers without a country code
    timezone: str = "Europe/Istanbul"  # for naive times in source data
    moves: SharedMoves | None = None  # a run's moves shared by its processes (workers)

    def resolve(self, path: str | Path) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.config_dir / candidate


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``crmsync check`` for a connector: what was tried and how it went."""

    what: str
    ok: bool
    detail: str = ""


# -- sources ------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]

    def __init__(self, config: Any, context: ConnectorContext) -> None: ...

    def streams(self) -> Sequence[Stream]:
        """The streams this source is configured to provide."""
        ...

    def check(self) -> list[Check]: ...

    def read(
        self, stream: Stream, since: datetime | None, until: datetime
    ) -> Iterator[Record | RecordIssue]:
        """Records of ``stream`` updated in ``(since, until]`` where the source can filter.

        ``since`` is None for a full read. Sources that cannot filter return everything;
        the core de-duplicates by (external id, updated_at). Bad records are yielded as
        ``RecordIssue`` so one never fails the stream. A read that goes through the whole
        stream (``since`` None, or ``Exhaustive``) reports every bad record still in it
        again: the core then forgets the issues it kept for the stream that this read did
        not report (their records were fixed, or are gone).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Versioned(Protocol):
    """A source that can tell, cheaply, whether a stream may have changed (optional).

    ``version`` returns a token that changes whenever the stream's data may have changed
    (an export file's size and modification time, say), or None when it cannot tell. When
    the token equals the one stored after the stream's last complete read that left
    nothing for later, the pull skips reading the stream: nothing in it is new.
    """

    def version(self, stream: Stream) -> str | None: ...


@runtime_checkable
class Resumable(Protocol):
    """A ``Versioned`` source that can go on from where a stream's last whole read ended,
    when the stream has only grown since, as an export file appended to (optional).

    ``resume_point`` tells, once a read was taken to its end, where it ended (an opaque
    token; None: it cannot tell). The pull keeps it with the stream's version and gives
    it back before the stream's next read (``resume_from``; None: read it whole). The
    source must then prove the stream still begins with exactly what that read went
    through (for a file, by hashing those bytes again) before it skips them; whatever it
    cannot prove it reads whole, so a point never hides a change. The pull may give the
    points of several streams before it reads any of them, and gives each again just
    before its read: a source may start proving a point as soon as it has it.
    """

    def resume_from(self, stream: Stream, point: str | None) -> None: ...

    def resume_point(self, stream: Stream) -> str | None: ...


@runtime_checkable
class Exhaustive(Protocol):
    """A source that can tell whether a stream's last read, once taken to its end, went
    through the whole stream (optional): an export file read from its start with no window,
    though ``since`` was given, say; not a window of it, nor a read resumed after the
    start it proved unchanged (``Resumable``). Without it the core counts a read with no
    ``since`` and no resume point as whole. Of a stream read in parts (``Divisible``),
    the last part's read tells for the whole input, as if read whole."""

    def read_whole(self, stream: Stream) -> bool: ...


@runtime_checkable
class Sized(Protocol):
    """A source that knows, cheaply, how much a full read of a stream goes through
    (optional): bytes of an export file, say; None when it cannot tell. The pull reads a
    large source in reader processes beside its staging, its streams shared out among
    them by size (``engine.read_ahead``), and shows how far a read got: ``position`` is
    how much of ``size`` the stream's read in progress has gone through so far (None:
    it cannot tell, or no read is in progress)."""

    def size(self, stream: Stream) -> int | None: ...

    def position(self, stream: Stream) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Span:
    """Part of a stream's input for one of several readers: from ``start`` (where a
    record begins) to ``end`` (where the next part starts), or to the input's end (None)."""

    start: int
    end: int | None


@runtime_checkable
class Divisible(Protocol):
    """A ``Sized`` source whose large stream several readers can read at once, each a part
    of it (optional): a first sync's pull then reads one large export on every CPU.

    ``divide`` gives at most ``parts`` spans that cover the stream's input in order, the
    first from its start and the last to its end, each starting where a record starts;
    a single span (or none) when the stream cannot be divided. ``read_span`` limits the
    stream's next ``read`` to one of them (None: the whole input again). Records and
    issues read from the spans in order are exactly those of one whole read, with the
    same line numbers; only the last span's read tells a ``resume_point``, and it is the
    whole input's, as if read whole.
    """

    def divide(self, stream: Stream, parts: int) -> Sequence[Span]: ...

    def read_span(self, stream: Stream, span: Span | None) -> None: ...


# -- destinations: the values -------------------------------------------------------------


class Outcome(StrEnum):
    """How a destination answered for one record; the core acts on this alone.

    ``NOT_SENT`` from ``push`` is only for a change of which nothing was sent (a change
    partly sent, say upserted but not yet moved between lists, is ``FAILED`` or
    ``PENDING``: it may be applied in part). The core then releases the person's
    in-flight mark (unless an earlier, unacknowledged push of theirs may be applied),
    charges no attempt, stops sending to the destination for the rest of the run, and
    the next run plans the person again. From ``collect``, it is for a job's people
    whose rest could not be sent: they stay in flight (their change may be applied in
    part) and are planned again by the next run, with no attempt charged. It counts as
    ``not_sent`` in the run report, beside the changes the run never handed over once
    the destination had stopped.
    """

    OK = "ok"
    FAILED = "failed"  # transient or unknown: retried on later runs, under a cap
    REJECTED = "rejected"  # the destination refuses this payload: retried only when it changes
    COMPLIANCE = "compliance"  # unsubscribed/forgotten/cleaned there: never retried
    PENDING = "pending"  # accepted into an asynchronous job: ``collect`` gives the result
    NOT_SENT = "not_sent"  # the destination can take no more now: kept for a later run


class Action(StrEnum):
    UPSERT = "upsert"
    ARCHIVE = "archive"  # the person was deleted or redacted at the source
    DELETE = "delete"  # permanent deletion, where the destination is configured for it


class ConsentIntent(StrEnum):
    """What a destination must do about one channel's marketing consent (``crmsync.consent``).

    There is deliberately no "subscribe" for a contact the destination already has: a
    sync never raises anybody's status there, so an opt-out made in the destination (or
    a cleaning, a suppression) always stands.
    """

    SUBSCRIBE_IF_NEW = "subscribe_if_new"  # opt-in recorded: subscribe only a new contact
    UNSUBSCRIBE = "unsubscribe"  # opt-out recorded: unsubscribe, new or existing
    LEAVE = "leave"  # nothing recorded: never subscribe; an existing status stays


@quick_init
@dataclass(frozen=True, slots=True)
class Change:
    """One person's change for one destination, computed by the diff against the ledger.

    ``memberships`` is every owned group the person is in once the change is applied;
    ``memberships_add`` and ``memberships_remove`` are the moves that get there from what
    the destination has or may have (a group applied by a push that was never
    acknowledged is removed too).
    """

    person_key: str
    action: Action
    is_new: bool  # no acknowledged record of this person at this destination yet
    email: str | None
    phone: str | None
    fields: Mapping[str, Any]  # destination field -> value, from the mapping file
    memberships_add: tuple[str, ...]
    memberships_remove: tuple[str, ...]
    email_intent: ConsentIntent
    sms_intent: ConsentIntent
    payload_hash: str
    remote_id: str | None = None  # what the destination called this person last time
    memberships: tuple[str, ...] = ()
    email_consent_at: datetime | None = None  # when the recorded e-mail consent was given
    sms_consent_at: datetime | None = None
    # an earlier push of this person was never acknowledged: it may have been applied in
    # part (a destination that creates and subscribes in separate calls finishes the job)
    resent: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled as its values and made again by __init__: the default for a frozen
        # dataclass with slots looks its fields up for every object, which made the
        # profile workers' changes twice as slow to send and half again as slow to take
        return (Change, _change_values(self))


_change_values = attrgetter(*(f.name for f in fields(Change)))


@dataclass(frozen=True, slots=True)
class PushResult:
    person_key: str
    outcome: Outcome
    remote_id: str | None = None
    message: str = ""  # the destination's reason, shown in status; never holds secrets
    job: str | None = None  # with PENDING: the job to ``collect`` the final result from


@dataclass(frozen=True, slots=True)
class ConsentUpdate:
    """A consent change seen in a destination (an unsubscribe, a cleaned address)."""

    email: str
    channel: Channel
    state: ConsentState
    at: datetime
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A destination field a mapping needs, for destinations that must create them."""

    name: str
    type: str
    label: str = ""
    choices: tuple[str, ...] = field(default_factory=tuple)


# -- destinations: the surface ------------------------------------------------------------


class MappingRules(Protocol):
    """A destination kind's own checks of a mapping file (field names, types, limits).

    Called with the parsed ``mappings.model.MappingSpec``, the file's raw ``[fields]``
    table and the ``mappings.model.Issues`` to add problems to (each with its TOML key);
    returns the spec with the kind's defaults filled in. The types are the mapping
    package's: the core only hands the rules over.
    """

    def __call__(self, spec: Any, raw_fields: Mapping[str, object], issues: Any) -> Any: ...


@runtime_checkable
class Destination(Protocol):
    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]
    default_mapping: ClassVar[Traversable | None]  # used when the config names no mapping
    mapping_rules: ClassVar[MappingRules | None]
    max_batch: int  # records per push() call

    def __init__(self, config: Any, context: ConnectorContext) -> None: ...

    def check(self, fields: Sequence[FieldSpec]) -> list[Check]:
        """``crmsync check``: credentials, scopes, what the configuration names, and
        whether the destination can take ``fields`` (every mapping that sends to it, in
        any pipeline) without creating anything: a field that exists there with another
        type is a failed check, so it shows before any run."""
        ...

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        """Make sure the destination can take these fields (create or verify them)."""
        ...

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        """Send one batch; return exactly one result per change, in any order.

        A result may be PENDING with a job id; the core then keeps the change in flight
        and later calls ``collect`` with that job and its changes. Once the destination
        can take no more in this run, the changes it did not send are NOT_SENT (or, when
        it sent nothing of the batch, it raises ``SendLater``).

        A destination whose ``push`` may run on several threads at once says how many
        batches may be on the wire side by side (an ``int`` attribute ``pushes_at_once``;
        one otherwise).
        """
        ...

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """Final results of a job ``push`` answered PENDING for, one per change; None while
        the job is still running. Destinations that never answer PENDING return None.

        A destination whose ``collect`` may run on several threads at once says how many
        jobs the core may look at side by side (an ``int`` attribute ``collects_at_once``;
        one otherwise), as ``pushes_at_once`` does for ``push``. A job that people were
        handed on to (PENDING with another job) after its pages were read (earlier in the
        pass, or beside it) is looked at once more in the same pass, alone.

        A pass looks at the jobs in the order of their ids (as Python orders text,
        whatever the state database's collation). A destination whose jobs hand people on
        to other jobs orders them: the id prefixes in a ``collected_first`` attribute (a
        tuple of ``str``) are looked at before every other job, those in
        ``collected_last`` once every other has been looked at (a run-wide job the others
        hand people on to), so that people handed on in a pass are settled in it."""
        ...

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        """Consent changes made in the destination since ``since`` (may yield nothing).

        A run iterates it on a thread of its own, from when it opens the destination
        until its pull is done and ``prepare`` and ``collect`` have run, so those two may
        be called while it is being read."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class PreparedOnce(Protocol):
    """A destination whose preparation one process of a run can do for all of them
    (optional). On Celery workers the run's preparation is done once, and every worker
    takes over what it found instead of preparing the destination again, so the run's
    calls about the destination's schema are those of one process, and no two processes
    write the same part of it at once.

    ``prepared`` tells, after ``prepare`` (or ``adopt``), what a push needs to know of
    the destination's schema, as plain JSON values; ``adopt`` hands that to a new
    instance of the same configuration, in another process, in place of ``prepare``.
    ``expect`` is told, once the run is planned and before its first push, every group
    the run's changes name, so that what the destination keeps its groups in (the
    options of a property, say) is made ready once, before the pushes, rather than by
    each process as its pushes meet them.
    """

    def prepared(self) -> dict[str, Any]: ...

    def adopt(self, prepared: Mapping[str, Any]) -> None: ...

    def expect(self, groups: Collection[str]) -> None: ...


@runtime_checkable
class SettlesWhilePushing(Protocol):
    """A destination whose finished jobs may be settled while the run still pushes
    (optional). The core then collects them on a thread of its own from the run's first
    push on, so what settling costs at the vendor (reading back who was imported, moving
    memberships) is spent while later batches still go out, not only once the last one
    has. ``collect`` is then called as ``collect_early``, which may run while ``push``
    does: the same results for a finished job, but None for a job the run's later
    pushes may still add to (a part-filled job held for the next push), which the run's
    final ``collect`` settles."""

    def collect_early(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None: ...
