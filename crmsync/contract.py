"""The two small surfaces every connector implements, and the values that cross them.

A *source* has a kind, a config model, ``check()`` and ``read(stream, since, until)``.
A *destination* has a kind, a config model, ``check()``, ``prepare(mapping)`` and
``push(changes) -> one result per change``. Everything else (cursors, staging, the ledger,
retries of failed records) lives in the core, so a connector stays small.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from crmsync.records import Channel, ConsentState, Record, RecordIssue, Stream


class ConnectorConfig(BaseModel):
    """Base of every connector's config model: unknown keys are errors, so typos show."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What the core hands every connector besides its own config."""

    name: str  # the connector's name in the configuration, e.g. "store_eu"
    config_dir: Path  # relative paths in the config are relative to this
    default_region: str = "TR"  # for phone numbers without a country code
    timezone: str = "Europe/Istanbul"  # for naive times in source data

    def resolve(self, path: str | Path) -> Path:
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.config_dir / candidate


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``crmsync check`` for a connector: what was tried and how it went."""

    what: str
    ok: bool
    detail: str = ""


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
        ``RecordIssue`` so one never fails the stream.
        """
        ...

    def close(self) -> None: ...


class Outcome(StrEnum):
    """How a destination answered for one record; the core acts on this alone."""

    OK = "ok"
    FAILED = "failed"  # transient or unknown: retried on later runs, under a cap
    REJECTED = "rejected"  # the destination refuses this payload: retried only when it changes
    COMPLIANCE = "compliance"  # unsubscribed/forgotten/cleaned there: never retried


class Action(StrEnum):
    UPSERT = "upsert"
    ARCHIVE = "archive"  # the person was deleted or redacted at the source
    DELETE = "delete"  # permanent deletion, where the destination is configured for it


@dataclass(frozen=True, slots=True)
class Change:
    """One person's change for one destination, computed by the diff against the ledger."""

    person_key: str
    action: Action
    is_new: bool  # no acknowledged record of this person at this destination yet
    email: str | None
    phone: str | None
    fields: Mapping[str, Any]  # destination field -> value, from the mapping file
    tags_add: tuple[str, ...]
    tags_remove: tuple[str, ...]
    email_consent: ConsentState
    sms_consent: ConsentState
    payload_hash: str
    remote_id: str | None = None  # what the destination called this person last time
    tags: tuple[str, ...] = ()  # every owned tag the person has once this change is applied


@dataclass(frozen=True, slots=True)
class PushResult:
    person_key: str
    outcome: Outcome
    remote_id: str | None = None
    message: str = ""  # the destination's reason, shown in status; never holds secrets


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


@runtime_checkable
class Destination(Protocol):
    kind: ClassVar[str]
    config_model: ClassVar[type[ConnectorConfig]]
    max_batch: int  # records per push() call

    def __init__(self, config: Any, context: ConnectorContext) -> None: ...

    def check(self) -> list[Check]: ...

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        """Make sure the destination can take these fields (create or verify them)."""
        ...

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        """Send one batch; return exactly one result per change, in any order."""
        ...

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        """Consent changes made in the destination since ``since`` (may yield nothing)."""
        ...

    def close(self) -> None: ...
