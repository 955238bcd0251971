"""The ``mailchimp`` destination: one audience, fed in bulk through the HTTP seam.

A push runs in two phases. First every person is upserted with batch subscribe calls of
up to 500 (several in flight, within the account's connection cap); then the tag moves
of the people Mailchimp confirmed are grouped by tag into the fewest static-segment
calls. A person is OK only when both their upsert and their tag moves were confirmed,
so the core's ledger never records a tag that Mailchimp does not have.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import httpx

from connectors.base import (
    Action,
    Change,
    Check,
    ConnectorConfig,
    ConnectorContext,
    ConsentUpdate,
    FieldSpec,
    Outcome,
    PushResult,
)
from connectors.http import HttpClient
from connectors.mailchimp import merge_fields
from connectors.mailchimp.checks import run_checks
from connectors.mailchimp.client import MailchimpApi, MailchimpApiError
from connectors.mailchimp.config import MailchimpConfig
from connectors.mailchimp.consent import (
    OPT_OUT_STATUSES,
    consent_update,
    mailchimp_time,
    status_plan,
)
from connectors.mailchimp.members import member_entry, read_answer, subscriber_hash, upsert_body
from connectors.mailchimp.segments import SegmentIndex, apply_calls
from connectors.mailchimp.tags import moves_of, plan_calls, tag_problem
from crmsync.errors import ConfigError, TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")
Results = list[tuple[int, PushResult]]
CALLS_PER_PUSH = 20  # batch calls' worth of people per push(): two rounds of 10 connections
_MEMBER_FIELDS = ["members.email_address", "members.status", "members.last_changed"]


class MailchimpDestination:
    kind: ClassVar[str] = "mailchimp"
    config_model: ClassVar[type[ConnectorConfig]] = MailchimpConfig

    def __init__(
        self,
        config: MailchimpConfig,
        context: ConnectorContext,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.context = context
        # Large pushes let tag moves of many people share calls (the floor is per tag).
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
        self._segments = SegmentIndex(self._api, config.list_id)
        self._types: dict[str, str] = {}  # merge tag -> Mailchimp type, filled by prepare()
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_connections, thread_name_prefix=f"mailchimp-{context.name}"
        )

    def check(self) -> list[Check]:
        return run_checks(self._api, self.config)

    def prepare(self, fields: Sequence[FieldSpec]) -> None:
        list_id = self.config.list_id
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

    def _merge_field_exists(self, body: dict[str, Any]) -> bool:
        return any(
            item.get("tag") == body["tag"] and item.get("type") == body["type"]
            for item in self._api.merge_fields(self.config.list_id)
        )

    def push(self, changes: Sequence[Change]) -> list[PushResult]:
        results: dict[int, PushResult] = {}
        accepted: list[tuple[int, Change]] = []
        chunk: list[tuple[int, Change]] = []
        futures: list[Future[tuple[Results, TransientError | None]]] = []
        seen: dict[str, str] = {}
        # Each full chunk is sent while the rest is still being screened.
        for index, change in enumerate(changes):
            if change.action is not Action.UPSERT:
                futures.append(self._pool.submit(self._delete, index, change))
                continue
            refused = self._screen(change, seen)
            if refused is not None:
                results[index] = refused
                continue
            accepted.append((index, change))
            chunk.append((index, change))
            if len(chunk) == self.config.batch_size:
                futures.append(self._pool.submit(self._upsert, chunk))
                chunk = []
        if chunk:
            futures.append(self._pool.submit(self._upsert, chunk))
        sent = self._gather(futures)
        for batch, _ in sent:
            results.update(batch)
        tag_errors = self._apply_tags(accepted, results)
        self._raise_if_nothing_arrived([error for _, error in sent] + tag_errors)
        return [results[i] for i in range(len(changes))]

    def read_consent(self, since: datetime | None) -> Iterator[ConsentUpdate]:
        read_at = datetime.now(UTC)
        # One second of overlap: Mailchimp's filter works in whole seconds and a change in
        # the cursor's own second must not be missed; the core ignores events it has.
        since_text = mailchimp_time(since - timedelta(seconds=1)) if since is not None else None
        for status, reason in OPT_OUT_STATUSES:
            for member in self._api.members(
                self.config.list_id,
                status=status,
                since_last_changed=since_text,
                fields=_MEMBER_FIELDS,
            ):
                yield consent_update(member, reason, read_at)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    # -- upserts -------------------------------------------------------------------

    def _screen(self, change: Change, seen: dict[str, str]) -> PushResult | None:
        """Why this change is not sent (a result), or None when it goes in a batch."""
        key = change.person_key
        if not change.email:
            return PushResult(key, Outcome.REJECTED, message="Mailchimp needs an e-mail address")
        problem = tag_problem(change, self.config.tag_prefix)
        if problem is not None:
            log.warning("person %s: %s", key, problem)
            return PushResult(key, Outcome.REJECTED, message=problem)
        if status_plan(change.email_consent, self.config.not_subscribed) is None:
            return PushResult(
                key,
                Outcome.REJECTED,
                message="not sent: no recorded e-mail opt-in and not_subscribed = 'skip'",
            )
        member_id = subscriber_hash(change.email)
        if member_id in seen:
            return PushResult(
                key,
                Outcome.REJECTED,
                message=f"same e-mail address as {seen[member_id]} in this batch",
            )
        seen[member_id] = key
        return None

    def _encode(self, tag: str, value: Any) -> Any:
        return merge_fields.encode(value, self._types.get(tag))

    def _upsert(self, chunk: Sequence[tuple[int, Change]]) -> tuple[Results, TransientError | None]:
        entries = [
            member_entry(change, self.config.not_subscribed, self._encode) for _, change in chunk
        ]
        body = upsert_body([entry for entry in entries if entry is not None])
        try:
            answer = self._api.batch_members(self.config.list_id, body)
        except MailchimpApiError as exc:
            if exc.status == 404:
                raise self._no_such_list() from exc
            failed = [
                (i, PushResult(c.person_key, Outcome.FAILED, message=str(exc))) for i, c in chunk
            ]
            return failed, None
        except TransientError as exc:
            failed = [
                (i, PushResult(c.person_key, Outcome.FAILED, message=str(exc))) for i, c in chunk
            ]
            return failed, exc
        by_email = read_answer(answer, [change.email or "" for _, change in chunk])
        out: Results = []
        for index, change in chunk:
            found = by_email[(change.email or "").lower()]
            out.append(
                (
                    index,
                    PushResult(change.person_key, found.outcome, found.remote_id, found.message),
                )
            )
        return out, None

    # -- tags ------------------------------------------------------------------------

    def _apply_tags(
        self, accepted: Sequence[tuple[int, Change]], results: dict[int, PushResult]
    ) -> list[TransientError | None]:
        """Moves tags of the people upserted OK; a failed move turns their result FAILED."""
        upserted = [(i, c) for i, c in accepted if results[i].outcome is Outcome.OK]
        moves = moves_of([(c.email or "", c) for _, c in upserted])
        calls = plan_calls(moves, self.config.batch_size)
        if not calls:
            return []
        failed, transients = apply_calls(
            self._api, self._segments, self.config.list_id, calls, self._pool
        )
        for index, change in upserted:
            reason = failed.get((change.email or "").lower())
            if reason is not None:
                ok = results[index]
                results[index] = PushResult(change.person_key, Outcome.FAILED, ok.remote_id, reason)
        return transients

    # -- deletions -----------------------------------------------------------------

    def _delete(self, index: int, change: Change) -> tuple[Results, TransientError | None]:
        key = change.person_key
        member_id = change.remote_id or (subscriber_hash(change.email) if change.email else None)
        if member_id is None:
            return [(index, PushResult(key, Outcome.OK, message="never sent to Mailchimp"))], None
        permanent = self.config.deletion == "delete_permanent"
        try:
            if permanent:
                self._api.delete_member_permanently(self.config.list_id, member_id)
            else:
                self._api.archive_member(self.config.list_id, member_id)
        except TransientError as exc:
            return [(index, PushResult(key, Outcome.FAILED, member_id, str(exc)))], exc
        except MailchimpApiError as exc:
            if exc.status != 404:
                return [(index, PushResult(key, Outcome.REJECTED, member_id, str(exc)))], None
            return [(index, PushResult(key, Outcome.OK, member_id, "already gone"))], None
        done = "deleted permanently" if permanent else "archived"
        return [(index, PushResult(key, Outcome.OK, member_id, done))], None

    # -- plumbing ------------------------------------------------------------------

    def _no_such_list(self) -> ConfigError:
        return ConfigError(
            f"Mailchimp has no audience {self.config.list_id!r} for this API key",
            key="list_id",
            hint="copy the Audience ID from Audience > Settings > Audience name and defaults",
        )

    @staticmethod
    def _gather(futures: Sequence[Future[T]]) -> list[T]:
        """Results in order; the first AuthError/ConfigError propagates, the rest cancelled.

        The pool has max_connections threads and the seam's per-account slots cap what is in
        flight, so several pushes (threads) sharing a key still respect Mailchimp's limit.
        """
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

    @staticmethod
    def _raise_if_nothing_arrived(errors: Sequence[TransientError | None]) -> None:
        """When every call of a push failed transiently Mailchimp is down: stop the run
        rather than count a failure against every person's retry cap."""
        first = errors[0] if errors else None
        if first is not None and all(error is not None for error in errors):
            raise TransientError(
                f"Mailchimp is unreachable: {first}", retry_after=first.retry_after
            )
