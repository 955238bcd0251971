"""The outbox destination: writes exactly what would be sent, as JSONL batch files.

It is the embedded default, so the main job runs without any account, and it is how an
operator reviews a sync before pointing it at a real tool. Each batch file is named by the
digest of its content and appears atomically (written aside, then renamed), so a batch
that is re-sent after a crash replaces itself instead of appearing twice: the outbox ends
exactly as one clean run would leave it.

It takes every kind of e-commerce event too (``EventDestination``): a batch of events is
a JSONL file of its own under ``events/``, content-addressed as well, one line per event
with the name it is sent under.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from crmsync.contract import (
    Change,
    Check,
    ConnectorConfig,
    ConnectorContext,
    ConsentUpdate,
    FieldSpec,
    MappingRules,
    Outcome,
    PushResult,
)
from crmsync.events import Event, EventKind, EventResult


class OutboxConfig(ConnectorConfig):
    kind: Literal["outbox"] = "outbox"
    directory: str = Field(
        "var/outbox", description="where batch files go; relative to the config file"
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="records per batch file")
    event_batch_size: int = Field(
        500, ge=1, le=10_000, description="events per events batch file (under events/)"
    )
    event_names: dict[EventKind, str] = Field(
        default_factory=dict,
        description="names events are written under, per kind (default: the kind itself)",
    )


def event_record(event: Event, name: str) -> dict[str, Any]:
    """An event as the outbox writes it: every field, times in ISO 8601 UTC, money as
    decimal strings."""
    return {
        "key": event.key,
        "kind": event.kind.value,
        "name": name,
        "person_key": event.person_key,
        "occurred_at": event.occurred_at.isoformat(),
        "source": event.source,
        "record_id": event.record_id,
        "currency": event.currency,
        "value": None if event.value is None else str(event.value),
        "lines": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": str(line.unit_price),
                "sku": line.sku,
                "discount": str(line.discount),
                "categories": list(line.categories),
                "image_url": line.image_url,
                "url": line.url,
            }
            for line in event.lines
        ],
        "email": event.email,
        "phone": event.phone,
        "customer_id": event.customer_id,
        "checkout_url": event.checkout_url,
        "historical": event.historical,
        "properties": dict(event.properties),
    }


def change_record(change: Change) -> dict[str, Any]:
    return {
        "person_key": change.person_key,
        "action": change.action.value,
        "is_new": change.is_new,
        "email": change.email,
        "phone": change.phone,
        "email_intent": change.email_intent.value,
        "sms_intent": change.sms_intent.value,
        "fields": dict(change.fields),
        "memberships_add": list(change.memberships_add),
        "memberships_remove": list(change.memberships_remove),
        "payload_hash": change.payload_hash,
    }


class OutboxDestination:
    kind: ClassVar[str] = "outbox"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "outbox.toml"
    config_model: ClassVar[type[ConnectorConfig]] = OutboxConfig
    default_mapping: ClassVar[Traversable | None] = files(__name__) / "mapping.toml"
    mapping_rules: ClassVar[MappingRules | None] = None  # a file takes any field

    def __init__(self, config: OutboxConfig, context: ConnectorContext) -> None:
        self.config = config
        self.directory = context.resolve(config.directory) / context.name
        self.max_batch = config.batch_size
        self.max_event_batch = config.event_batch_size
        self._files: list[str] = []
        self._counts: Counter[str] = Counter()

    def check(self, fields: Sequence[FieldSpec] = ()) -> list[Check]:
        """The directory is writable (a file takes any field)."""
        parent = self.directory
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        ok = os.access(parent, os.W_OK)
        detail = "" if ok else f"{parent} is not writable; change destinations.*.directory"
        return [Check(f"outbox directory {self.directory}", ok, detail)]

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        """Nothing to create: a file takes any field."""

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        body = b"".join(
            orjson.dumps(change_record(c), option=orjson.OPT_SORT_KEYS) + b"\n" for c in changes
        )
        name = self._write(self.directory, body)
        self._files.append(name)
        for change in changes:
            self._counts[f"{change.action.value}_{'new' if change.is_new else 'existing'}"] += 1
        return [PushResult(c.person_key, Outcome.OK, remote_id=c.person_key) for c in changes]

    def event_names(self) -> Mapping[EventKind, str]:
        """Every kind, under its own name unless ``event_names`` renames it."""
        return {kind: self.config.event_names.get(kind, kind.value) for kind in EventKind}

    def push_events(self, events: Sequence[Event]) -> list[EventResult]:
        names = self.event_names()
        body = b"".join(
            orjson.dumps(event_record(e, names[e.kind]), option=orjson.OPT_SORT_KEYS) + b"\n"
            for e in events
        )
        name = self._write(self.directory / "events", body)
        self._files.append(f"events/{name}")
        for event in events:
            self._counts[f"event_{event.kind.value}"] += 1
        return [EventResult(e.key, Outcome.OK, remote_id=e.key) for e in events]

    def _write(self, directory: Path, body: bytes) -> str:
        """Writes ``body`` as a file named by its digest, atomically; returns the name."""
        name = hashlib.sha256(body).hexdigest()[:24] + ".jsonl"
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{name}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / name)
        return name

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        return None  # every push is final

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        return iter(())

    def close(self) -> None:
        """Writes a summary of this session's batches, only when there were any."""
        if not self._files:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        summary = {"written_at": stamp, "batches": self._files, "records": dict(self._counts)}
        path = self.directory / f"summary-{stamp}.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        self._files = []
        self._counts.clear()


def read_events(directory: Path) -> list[dict[str, Any]]:
    """Every event in an outbox directory's events/ files, in file-name order (a batch
    re-sent after a crash may repeat an event: compare by ``key``)."""
    return read_outbox(directory / "events")


def read_outbox(directory: Path) -> list[dict[str, Any]]:
    """Every record in an outbox directory (for tests and for operators' scripts)."""
    records: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        with open(path, "rb") as handle:
            records.extend(orjson.loads(line) for line in handle if line.strip())
    return records
