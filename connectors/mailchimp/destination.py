"""The ``mailchimp`` destination: one audience, fed in bulk through the HTTP seam.

A push runs in two phases. First every person is upserted with batch subscribe calls of
up to 500 (several in flight, within the account's connection cap); then the tag moves
of the people Mailchimp confirmed are held for the run (``run_tags``): every tag call
that is full goes out at once (a missing tag is created carrying its first members), and
each tag's last remainder when the core collects the run's tag job at its end. A person
is OK only when both their upsert and their tag moves were confirmed (PENDING on the tag
job until then), so the core's ledger never records a tag that Mailchimp does not have.
Chunking, concurrent sending, the tag index and the call planning are the destination
kit's (``connectors.kit``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, ClassVar

import httpx

from connectors.http import HttpClient
from connectors.kit import chunked, owned_problem, send_chunks
from connectors.kit.checks import field_conflicts
from connectors.mailchimp import merge_fields
from connectors.mailchimp.checks import event_checks, run_checks
from connectors.mailchimp.client import MailchimpApi, MailchimpApiError
from connectors.mailchimp.config import MailchimpConfig
from connectors.mailchimp.consent import (
    OPT_OUT_STATUSES,
    consent_update,
    mailchimp_time,
    status_plan,
)
from connectors.mailchimp.ecommerce import EVENT_NAMES, EcommerceEvents
from connectors.mailchimp.ecommerce_api import EcommerceApi
from connectors.mailchimp.ecommerce_stores import StoreSettings
from connectors.mailchimp.mapping_rules import check_mapping
from connectors.mailchimp.members import member_entry, read_answer, subscriber_hash, upsert_body
from connectors.mailchimp.run_tags import TAG_JOB, RunTags
from connectors.mailchimp.tags import MAX_TAG_NAME, tag_index
from crmsync.contract import (
    Action,
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
from crmsync.errors import ConfigError, ConnectorError
from crmsync.events import Event, EventKind, EventResult
from crmsync.personal import mask_key

log = logging.getLogger(__name__)
# batch calls' worth of people per push(): two rounds of 10 connections, so the core's two
# ledger transactions per push are few beside the calls (tag calls are per run anyway)
CALLS_PER_PUSH = 20
_MEMBER_FIELDS = ["members.email_address", "members.last_changed"]  # the status is the filter's


class MailchimpDestination:
    kind: ClassVar[str] = "mailchimp"
    starter: ClassVar[Traversable | None] = files("connectors.starters") / "mailchimp.toml"
    config_model: ClassVar[type[ConnectorConfig]] = MailchimpConfig
    default_mapping: ClassVar[Traversable | None] = files("connectors.mailchimp") / "mapping.toml"
    mapping_rules: ClassVar[MappingRules | None] = staticmethod(check_mapping)

    # How many pushes the core may have on the wire at once (``engine.push``). push() may
    # run on two threads (it keeps nothing of its own between calls; the run's held tag
    # moves and the tag index lock themselves: tests/test_mailchimp_sync.py). With one,
    # every push waits for its slowest upsert before its tag calls, and for its slowest
    # tag call before the next push is marked in flight: connections idle at each wait,
    # for longer the slower the calls. With two, the other push's calls fill them. On
    # the 2-core bench machine (fake at 80 ms a call, CPU-bound) both were alike (plan
    # and push 25.7 to 26.8 s against 26.5 to 29.7 s at 100,000; 75.4 against 75.7 s at
    # 300,000); at 500 ms a call two took 41.1 and 41.4 s against 51.3 and 51.8 s.
    pushes_at_once: ClassVar[int] = 2

    def __init__(
        self,
        config: MailchimpConfig,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.max_batch = config.batch_size * CALLS_PER_PUSH
        key = config.api_key.get_secret_value()
        self._http = HttpClient(
            config.http_settings(),
            account="mailchimp:" + hashlib.sha256(key.encode()).hexdigest()[:16],
            auth=httpx.BasicAuth("crmsync", key),
            headers={"User-Agent": "crmsync"},
            secrets=[key],
            transport=transport,
        )
        self._api = MailchimpApi(self._http)
        self._tags = tag_index(self._api, config.list_id, config.batch_size)
        self._types: dict[str, str] = {}  # merge tag -> Mailchimp type, filled by prepare()
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_connections, thread_name_prefix=f"mailchimp-{context.name}"
        )
        self._run_tags = RunTags(
            self._api, self._tags, config.list_id, config.batch_size, self._pool, context.moves
        )
        # events: at most batch_size per push, their calls on the same pool (10 at once)
        self.max_event_batch = config.batch_size
        settings = StoreSettings(config.list_id, config.store_prefix, config.store_name)
        self._events = EcommerceEvents(EcommerceApi(self._http), settings, self._pool)

    def check(self, fields: Sequence[FieldSpec] = ()) -> list[Check]:
        """The key, the data centre and the audience; then, one read of its merge fields,
        whether the mapped ones fit (``merge_fields.plan``, creating nothing)."""
        checks = run_checks(self._api, self.config)
        if fields and all(check.ok for check in checks):
            checks.extend(self._merge_fields_check(fields))
        return checks

    def _merge_fields_check(self, fields: Sequence[FieldSpec]) -> list[Check]:
        try:
            listed = list(self._api.merge_fields(self.config.list_id))
            existing = [merge_fields.existing_field(item) for item in listed]
            plan = merge_fields.plan(fields, existing, self.config.merge_field_limit)
        except ConfigError as exc:
            return field_conflicts("merge field", exc)
        except ConnectorError as exc:
            return [Check("merge fields", False, str(exc))]
        made = [str(body["tag"]) for body in plan.create]
        detail = f"{len(fields) - len(made)} of the {len(fields)} mapped exist"
        if made:
            detail += f"; {', '.join(made)} are created by the first run"
        return [Check("merge fields", True, detail)]

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        list_id = self.config.list_id
        # the tags are listed beside the merge fields, not when the first tag call needs
        # them (often the run's last calls, the remainders): one round of calls less
        self._pool.submit(self._list_tags)
        try:
            listed = list(self._api.merge_fields(list_id))
        except MailchimpApiError as exc:
            raise (self._no_such_list() if exc.status == 404 else exc) from exc
        existing = [merge_fields.existing_field(item) for item in listed]
        plan = merge_fields.plan(fields, existing, self.config.merge_field_limit)
        for body in plan.create:
            try:
                self._api.add_merge_field(list_id, body)
            except MailchimpApiError as exc:
                if exc.status == 400 and self._merge_field_exists(body):
                    continue  # a retried create whose first answer was lost
                raise ConfigError(
                    f"Mailchimp refused to create merge field {body['tag']} "
                    f"({body['type']}): {exc.detail or exc.title}",
                    key=f"mapping.{body['tag']}",
                    hint="check the audience's merge fields in Mailchimp",
                ) from exc
        for found, choices in plan.grow_choices:
            self._api.update_merge_field(list_id, found.merge_id, found.grown(choices))
        self._types.update(plan.types)

    def _list_tags(self) -> None:
        """Lists the audience's tags for the run's tag calls; a failure is left for the
        first call that needs them, which lists them again and raises it there."""
        try:
            self._tags.ids(())
        except Exception as exc:  # logged: the tag calls meet it again
            log.debug("listing the tags ahead failed: %s", exc)

    def _merge_field_exists(self, body: dict[str, Any]) -> bool:
        return any(
            item.get("tag") == body["tag"] and item.get("type") == body["type"]
            for item in self._api.merge_fields(self.config.list_id)
        )

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        results: dict[int, PushResult] = {}
        upserts: list[tuple[int, Change]] = []
        deletions: list[tuple[int, Change]] = []
        seen: dict[str, str] = {}
        for index, change in enumerate(changes):
            if change.action is not Action.UPSERT:
                deletions.append((index, change))
                continue
            refused = self._screen(change, seen)
            if refused is not None:
                results[index] = refused
                continue
            upserts.append((index, change))
        # Upserts go in batches, each deletion is a call of its own; all side by side. When
        # every call failed transiently the kit raises: Mailchimp is down, the run stops.
        chunks = chunked([change for _, change in upserts], self.config.batch_size)
        chunks += [[change] for _, change in deletions]
        sent = send_chunks(chunks, self._send, self._pool, name="Mailchimp")
        for (index, _), result in zip([*upserts, *deletions], sent, strict=True):
            results[index] = result
        self._apply_tags(upserts, results)
        return [results[i] for i in range(len(changes))]

    def collect(self, job: str, changes: Sequence[Change]) -> list[PushResult] | None:
        """Settles a run's tag job: people upserted whose tag moves were held."""
        if job.startswith(TAG_JOB):
            return self._run_tags.settle(job, changes)
        message = f"unknown Mailchimp job {job!r}: sent again"
        return [PushResult(c.person_key, Outcome.FAILED, message=message) for c in changes]

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        read_at = datetime.now(UTC)
        # One second of overlap: Mailchimp's filter works in whole seconds and a change in
        # the cursor's own second must not be missed; the core ignores events it has.
        since_text = mailchimp_time(since - timedelta(seconds=1)) if since is not None else None
        reasons = dict(OPT_OUT_STATUSES)
        # both statuses side by side: their first pages in one round of calls
        for status, member in self._api.members_by_status(
            self.config.list_id,
            list(reasons),
            since_last_changed=since_text,
            fields=_MEMBER_FIELDS,
            pool=self._pool,
        ):
            yield consent_update(member, reasons[status], read_at)

    def event_names(self) -> Mapping[EventKind, str]:
        """The kinds Mailchimp takes (as e-commerce objects, ``ecommerce``); an ordered
        product is not among them: its order's lines carry it."""
        return EVENT_NAMES

    def push_events(self, events: Sequence[Event]) -> list[EventResult]:
        return self._events.push(events)

    def check_events(self, kinds: Collection[EventKind]) -> list[Check]:
        """``check`` for a pipeline sending these kinds of events here: e-commerce access."""
        return event_checks(EcommerceApi(self._http), self.config.store_prefix)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    # -- upserts -------------------------------------------------------------------

    def _screen(self, change: Change, seen: dict[str, str]) -> PushResult | None:
        """Why this change is not sent (a result), or None when it goes in a batch."""
        key = change.person_key
        if not change.email:
            return PushResult(key, Outcome.REJECTED, message="Mailchimp needs an e-mail address")
        problem = owned_problem(change, self.config.tag_prefix, MAX_TAG_NAME, noun="tag")
        if problem is not None:
            log.warning("person %s: %s", mask_key(key), problem)
            return PushResult(key, Outcome.REJECTED, message=problem)
        if status_plan(change.email_intent, self.config.not_subscribed) is None:
            return PushResult(
                key,
                Outcome.REJECTED,
                message="not sent: no recorded e-mail opt-in and not_subscribed = 'skip'",
            )
        # the address as Mailchimp keys it (its member id is this text's MD5)
        member = change.email.strip().lower()
        if member in seen:
            return PushResult(
                key,
                Outcome.REJECTED,
                message=f"same e-mail address as {seen[member]} in this batch",
            )
        seen[member] = key
        return None

    def _encode(self, tag: str, value: Any) -> Any:
        return merge_fields.encode(value, self._types.get(tag))

    def _send(self, chunk: Sequence[Change]) -> list[PushResult]:
        """One call: a batch subscribe for a chunk of upserts, or one person's deletion."""
        if chunk[0].action is not Action.UPSERT:
            return [self._delete(chunk[0])]
        return self._upsert(chunk)

    def _upsert(self, chunk: Sequence[Change]) -> list[PushResult]:
        """One batch subscribe call; a refusal of the whole call (a ``MailchimpApiError``)
        fails the chunk through the kit, a missing list stops the run."""
        entries = [
            member_entry(change, self.config.not_subscribed, self._encode) for change in chunk
        ]
        body = upsert_body([entry for entry in entries if entry is not None])
        try:
            answer = self._api.batch_members(self.config.list_id, body)
        except MailchimpApiError as exc:
            if exc.status == 404:
                raise self._no_such_list() from exc
            raise
        by_email = read_answer(answer, [change.email or "" for change in chunk])
        out: list[PushResult] = []
        for change in chunk:
            found = by_email[(change.email or "").lower()]
            out.append(PushResult(change.person_key, found.outcome, found.remote_id, found.message))
        return out

    # -- tags ------------------------------------------------------------------------

    def _apply_tags(
        self, upserts: Sequence[tuple[int, Change]], results: dict[int, PushResult]
    ) -> None:
        """Moves tags of the people upserted OK: a failed move turns their result FAILED,
        a move held for a fuller call PENDING on the run's tag job."""
        upserted = [(i, c) for i, c in upserts if results[i].outcome is Outcome.OK]
        answers = self._run_tags.move([c for _, c in upserted])
        for index, change in upserted:
            if change.person_key not in answers:
                continue
            reason, ok = answers[change.person_key], results[index]
            if reason is None:
                job = self._run_tags.job
                results[index] = PushResult(
                    change.person_key, Outcome.PENDING, ok.remote_id, "tags held", job
                )
            else:
                results[index] = PushResult(change.person_key, Outcome.FAILED, ok.remote_id, reason)

    # -- deletions -----------------------------------------------------------------

    def _delete(self, change: Change) -> PushResult:
        """Archives (or deletes) one member; a transient failure is raised for the kit."""
        key = change.person_key
        member_id = change.remote_id or (subscriber_hash(change.email) if change.email else None)
        if member_id is None:
            return PushResult(key, Outcome.OK, message="never sent to Mailchimp")
        permanent = self.config.deletion == "delete_permanent"
        try:
            if permanent:
                self._api.delete_member_permanently(self.config.list_id, member_id)
            else:
                self._api.archive_member(self.config.list_id, member_id)
        except MailchimpApiError as exc:
            if exc.status != 404:
                return PushResult(key, Outcome.REJECTED, member_id, str(exc))
            return PushResult(key, Outcome.OK, member_id, "already gone")
        done = "deleted permanently" if permanent else "archived"
        return PushResult(key, Outcome.OK, member_id, done)

    # -- plumbing ------------------------------------------------------------------

    def _no_such_list(self) -> ConfigError:
        return ConfigError(
            f"Mailchimp has no audience {self.config.list_id!r} for this API key",
            key="list_id",
            hint="copy the Audience ID from Audience > Settings > Audience name and defaults",
        )
