"""A fake Mailchimp Marketing API speaking real HTTP on 127.0.0.1, strict about the spec.

Every request is validated against ``../shared/specs/mailchimp/marketing-v3.json`` with
openapi-core (and, by default, every response too, so the fake cannot drift from the real
API). A request the spec does not allow is answered 400 and recorded in ``violations``;
the ``mailchimp_fake`` fixture fails the test when that list is not empty, and checks the
consent invariant over the final state: nobody who was ever unsubscribed or cleaned, and
nobody the test did not declare as consenting, ends up ``subscribed``.

Behaviour modelled on Mailchimp (its e-commerce API in ``mailchimp_ecommerce``): basic
auth with any user name and the key; members keyed by subscriber hash; batch subscribe
with ``update_existing`` and ``status_if_new`` (an existing member's status is only
changed by ``status``, and never raised out of ``unsubscribed``/``cleaned``); per-member
errors (invalid address, invalid merge values, compliance state, forgotten addresses);
merge fields with types; static segments (tags) with batch add/remove; archive and
permanent deletion; 500 members per call; at most 10 requests in flight per key (429
beyond; ``max_in_flight`` is the peak, ``most_in_window`` the most requests that arrived
within a span). Faults (5xx, 429), storms and latency (the time each call takes, the
fake's own work included) are injectable; call counters are public.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.fakes.serving import Served

# The workplace's shared folder sits beside the checkout; CRMSYNC_SHARED names another.
SHARED = Path(os.environ.get("CRMSYNC_SHARED") or Path(__file__).resolve().parents[3] / "shared")
SPEC_PATH = SHARED / "specs" / "mailchimp" / "marketing-v3.json"
SPEC_HOST = "https://server.api.mailchimp.com"  # the spec's server; paths keep its /3.0
BASE_PATH = "/3.0"
MAX_MEMBERS = 500
OPTED_OUT = frozenset({"unsubscribed", "cleaned"})
DEFAULT_FIELDS = (
    ("FNAME", "text"),
    ("LNAME", "text"),
    ("ADDRESS", "address"),
    ("PHONE", "phone"),
    ("BIRTHDAY", "birthday"),
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_MERGE_TAG = re.compile(r"^[A-Z0-9_]{1,10}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BIRTHDAY = re.compile(r"^\d{2}/\d{2}$")


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# -- the spec -----------------------------------------------------------------------------


@cache
def spec() -> OpenAPI:
    # openapi-core knows application/json only; Mailchimp's errors are problem+json.
    config = Config(extra_media_type_deserializers={"application/problem+json": _problem_json})
    if not SPEC_PATH.is_file():
        raise FileNotFoundError(
            f"the Mailchimp OpenAPI spec is not at {SPEC_PATH}: the fake validates every "
            "request against it; keep the shared folder beside the checkout (../shared) "
            "or set CRMSYNC_SHARED to it"
        )
    return OpenAPI.from_dict(json.loads(SPEC_PATH.read_text(encoding="utf-8")), config=config)


def _problem_json(value: bytes, **parameters: str) -> Any:
    return json.loads(value)  # parameters: the media type's charset, already UTF-8


@dataclass
class _SpecRequest:
    """openapi-core's Request protocol over what the handler read."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes | None
    content_type: str
    host_url: str = SPEC_HOST

    def __post_init__(self) -> None:
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(self.query),
            header=Headers(self.headers),
            cookie=ImmutableMultiDict(),
        )


@dataclass
class _SpecResponse:
    status_code: int
    data: bytes | None
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def spec_problem(request: _SpecRequest, response: _SpecResponse | None = None) -> str | None:
    """Why the spec refuses this request (or response), or None when it is valid."""
    try:
        if response is None:
            spec().validate_request(request)
        else:
            spec().validate_response(request, response)
    except Exception as exc:  # openapi-core raises a family of errors; all are violations
        detail = "; ".join(str(e) for e in getattr(exc, "schema_errors", ()) or ())
        return f"{type(exc).__name__}: {exc}" + (f" [{detail[:500]}]" if detail else "")
    return None


# -- state ----------------------------------------------------------------------------------


@dataclass
class Fault:
    status: int
    after: bool = False  # apply the request, then answer the error (the answer is "lost")
    retry_after: str | None = None
    only: tuple[str, str] | None = None  # (method, path template) this fault waits for


@dataclass
class FakeList:
    id: str
    name: str
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # hash -> member
    history: dict[str, list[str]] = field(default_factory=dict)  # hash -> statuses held
    merge_fields: list[dict[str, Any]] = field(default_factory=list)
    segments: dict[int, dict[str, Any]] = field(default_factory=dict)
    segment_members: dict[int, set[str]] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class FakeMailchimp:
    """The fake's state, knobs and counters; ``start()`` serves it on a random port."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        list_id: str = "a1b2c3d4e5",
        max_connections: int = 10,
        merge_field_limit: int = 30,
        latency: float = 0.0,
        validate_responses: int = 5,
        validate: bool = True,
    ) -> None:
        self.api_key = api_key or f"{uuid.uuid4().hex}-us7"
        self.other_keys: set[str] = set()  # more accounts served here (``add_account``)
        self.list_id = list_id
        self.max_connections = max_connections
        self.merge_field_limit = merge_field_limit
        self.latency = latency
        self.validate = validate
        # Responses are checked for the first few answers of every route: enough to keep
        # the fake's shapes honest without re-validating 500-member answers all day.
        self.validate_responses = validate_responses
        self._responses_checked: Counter[tuple[str, str]] = Counter()
        self.lists: dict[str, FakeList] = {}
        self.compliance_emails: set[str] = set()
        self.forgotten: set[str] = set()  # subscriber hashes deleted permanently
        self.consented: set[str] | None = None  # addresses the test allows to be subscribed
        self.calls: Counter[tuple[str, str]] = Counter()
        self.write_calls = 0
        self.tagged_on_create = 0  # members a segment create's static_segment tagged
        self.concurrency_rejections = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []  # time.monotonic() of every request's arrival
        self.violations: list[str] = []
        self.faults: list[Fault] = []
        self.storm_rate = 0.0
        self.storm_statuses: tuple[int, ...] = (500, 503, 429)
        self._storm_rng = random.Random(7)
        self.gate: threading.Event | None = None  # when set, admitted requests wait on it
        self._in_flight = 0
        self._lock = threading.RLock()
        self._next_id = 1000
        # a paged read's members, found and sorted for its first page and kept for its
        # later pages (offset > 0), which a large read-back asks for at once
        self._listed: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        # e-commerce (``tests.fakes.mailchimp_ecommerce``): stores by id, and what would
        # start an automation (store, what, record id) while a store was (not) syncing
        self.stores: dict[str, Any] = {}
        self.triggers: list[tuple[str, str, str]] = []
        self.paused: list[tuple[str, str, str]] = []
        self.syncing_changes: list[tuple[str, bool]] = []
        self._served = Served(self, (500, {"Content-Type": "application/problem+json"}, b"{}"))
        self.add_list(list_id, "crmsync test audience")

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeMailchimp:
        if self.validate:
            spec()  # a missing spec fails here, once and plainly, not as each request's 400
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop()

    @property
    def base_url(self) -> str:
        return f"{self._served.origin}{BASE_PATH}"

    def destination_config(self, **overrides: Any) -> dict[str, Any]:
        """Raw config for ``MailchimpConfig`` pointing at this fake, with fast retries."""
        raw: dict[str, Any] = {
            "kind": "mailchimp",
            "api_key": self.api_key,
            "list_id": self.list_id,
            "base_url": self.base_url,
            "http": {"timeout": 30, "retry": {"backoff_initial": 0.01, "backoff_max": 0.05}},
        }
        raw.update(overrides)
        return raw

    # -- knobs ---------------------------------------------------------------------

    def inject(
        self,
        *statuses: int,
        after: bool = False,
        retry_after: str | None = "0",
        only: tuple[str, str] | None = None,
    ) -> None:
        """The next requests (one per status; ``only`` those to one route) get these statuses."""
        with self._lock:
            self.faults.extend(
                Fault(s, after, retry_after if s == 429 else None, only) for s in statuses
            )

    def storm(self, rate: float, statuses: Iterable[int] = (500, 503, 429), seed: int = 7) -> None:
        """A fraction ``rate`` of the following requests fail with one of ``statuses``."""
        with self._lock:
            self.storm_rate, self.storm_statuses = rate, tuple(statuses)
            self._storm_rng = random.Random(seed)

    def expect_consented(self, emails: Iterable[str]) -> None:
        self.consented = {e.lower() for e in emails}

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.write_calls = 0
            self.tagged_on_create = 0
            self.concurrency_rejections = 0
            self.max_in_flight = 0
            self.arrivals.clear()

    # -- seeding and inspection ----------------------------------------------------

    def add_account(self, list_id: str, name: str) -> str:
        """Another account with a list of its own, as many merchants' accounts (one list
        each) served by one fake; returns its API key. ``max_connections`` still counts
        the requests of every account together."""
        key = f"{uuid.uuid4().hex}-us7"
        with self._lock:
            self.other_keys.add(key)
            self.add_list(list_id, name)
        return key

    def add_list(self, list_id: str, name: str) -> FakeList:
        found = FakeList(list_id, name)
        for tag, kind in DEFAULT_FIELDS:
            self._new_merge_field(found, {"tag": tag, "name": tag.title(), "type": kind})
        self.lists[list_id] = found
        return found

    @property
    def audience(self) -> FakeList:
        return self.lists[self.list_id]

    def tag_by_hand(self, name: str, emails: Iterable[str]) -> None:
        """A marketer's own tag on these members (crmsync must never touch it)."""
        with self._lock:
            sid = self._segment_named(self.audience, name, create=True)
            self.audience.segment_members[sid].update(subscriber_hash(e) for e in emails)

    def add_member(
        self,
        email: str,
        status: str,
        merge_fields: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
        last_changed: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            member = self._create_member(self.audience, email, status, merge_fields or {})
            if last_changed:
                member["last_changed"] = last_changed
            for tag in tags:
                self._segment_named(self.audience, tag, create=True)
                self.audience.segment_members[self._segment_named(self.audience, tag)].add(
                    member["id"]
                )
            return member

    def set_status(self, email: str, status: str, at: datetime | None = None) -> None:
        """Changes a member's status "in Mailchimp" (an unsubscribe link, a bounce)."""
        with self._lock:
            member = self.audience.members[subscriber_hash(email)]
            self._set_status(self.audience, member, status)
            if at is not None:
                member["last_changed"] = at.astimezone(UTC).replace(microsecond=0).isoformat()

    def member(self, email: str) -> dict[str, Any] | None:
        return self.audience.members.get(subscriber_hash(email))

    def statuses(self) -> dict[str, str]:
        return {m["email_address"].lower(): m["status"] for m in self.audience.members.values()}

    def tags_of(self, email: str) -> set[str]:
        member_id = subscriber_hash(email)
        audience = self.audience
        return {
            audience.segments[sid]["name"]
            for sid, ids in audience.segment_members.items()
            if member_id in ids
        }

    def tag_members(self, list_id: str | None = None) -> dict[str, set[str]]:
        """Tag name -> member addresses (of the default list, or of ``list_id``)."""
        audience = self.lists[list_id] if list_id else self.audience
        emails = {h: m["email_address"].lower() for h, m in audience.members.items()}
        return {
            audience.segments[sid]["name"]: {emails[h] for h in ids if h in emails}
            for sid, ids in audience.segment_members.items()
        }

    def merge_field_types(self) -> dict[str, str]:
        return {f["tag"]: f["type"] for f in self.audience.merge_fields}

    def writes(self) -> int:
        return self.write_calls

    def consent_problems(self) -> list[str]:
        """People subscribed although they opted out here once or never consented."""
        problems = []
        for member_id, member in self.audience.members.items():
            if member["status"] != "subscribed":
                continue
            email = member["email_address"].lower()
            if OPTED_OUT & set(self.audience.history.get(member_id, ())):
                problems.append(f"{email} is subscribed after being unsubscribed or cleaned")
            if self.consented is None:
                problems.append(f"{email} is subscribed but the test declared no consent set")
            elif email not in self.consented:
                problems.append(f"{email} is subscribed without recorded consent")
        return problems

    # -- request handling ------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        query = parse_qsl(split.query, keep_blank_values=True)
        route, params = _route(method, split.path)
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.calls[(method, route or split.path)] += 1
            if method != "GET":
                self.write_calls += 1
        if not self._authorised(headers.get("authorization", "")):
            return _problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            )
        if not self._enter():
            return _problem(
                429,
                "Too Many Requests",
                "You have exceeded the limit of 10 simultaneous connections.",
                {"Retry-After": "0"},
            )
        try:
            if self.gate is not None:
                self.gate.wait(10)
            started = time.perf_counter()
            answer = self._answer(method, split.path, query, headers, body, route, params)
            # ``latency`` is the time a call takes, the fake's own work included (as a
            # vendor's answer time is): that work, done one call at a time under this
            # process's GIL, must not lengthen the calls the benches compare with it
            time.sleep(max(0.0, self.latency - (time.perf_counter() - started)))
            return answer
        finally:
            self._leave()

    def _answer(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        route: str | None,
        params: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer to an admitted request: validated, faulted or dispatched."""
        request = _SpecRequest(
            method.lower(),
            path,
            query,
            headers,
            body or None,
            headers.get("content-type", "application/json"),
        )
        if self.validate:
            problem = spec_problem(request)
            if problem is not None:
                self._violation(f"{method} {path}: {problem}")
                return _problem(400, "Invalid Resource", f"spec violation: {problem[:300]}")
        fault = self._next_fault(method, route)
        if fault is not None and not fault.after:
            return _fault_answer(fault)
        answer = self._dispatch(route, params, method, dict(query), body)
        if fault is not None:
            return _fault_answer(fault)
        # 204s are not checked: the converted spec gives them an empty "content" map,
        # which openapi-core reads as "a body is required".
        if self.validate and answer[0] != 204 and self._check_response(method, route):
            status, head, data = answer
            problem = spec_problem(
                request, _SpecResponse(status, data or None, head["Content-Type"], head)
            )
            if problem is not None:
                self._violation(f"response to {method} {path}: {problem}")
        return answer

    def _dispatch(
        self,
        route: str | None,
        params: dict[str, str],
        method: str,
        query: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        handler = _HANDLERS.get((method, route or ""))
        if handler is None:
            self._violation(f"{method} {route}: not implemented by the fake")
            return _problem(404, "Resource Not Found", "not implemented by the fake")
        try:
            payload = orjson.loads(body) if body else None
            with self._lock:
                status, result = handler(self, params, query, payload)
        except ApiError as exc:
            return _problem(exc.status, exc.title, exc.detail)
        if status == 204:
            return 204, {"Content-Type": "application/json; charset=utf-8"}, b""
        return (
            status,
            {"Content-Type": "application/json; charset=utf-8"},
            orjson.dumps(result),
        )

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, key = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return key == self.api_key or key in self.other_keys

    def _enter(self) -> bool:
        with self._lock:
            if self._in_flight >= self.max_connections:
                self.concurrency_rejections += 1
                return False
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return True

    def _check_response(self, method: str, route: str | None) -> bool:
        with self._lock:
            key = (method, route or "")
            self._responses_checked[key] += 1
            return self._responses_checked[key] <= self.validate_responses

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def most_in_window(self, seconds: float) -> int:
        """The most requests that arrived within any ``seconds`` (a rate a key was sent at)."""
        with self._lock:
            times = sorted(self.arrivals)
        most, first = 0, 0
        for last, moment in enumerate(times):
            while moment - times[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _next_fault(self, method: str, route: str | None) -> Fault | None:
        with self._lock:
            for position, fault in enumerate(self.faults):
                if fault.only is None or fault.only == (method, route):
                    return self.faults.pop(position)
            if self.storm_rate and self._storm_rng.random() < self.storm_rate:
                status = self._storm_rng.choice(self.storm_statuses)
                after = status >= 500 and self._storm_rng.random() < 0.5
                return Fault(status, after=after, retry_after="0" if status == 429 else None)
            return None

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    # -- model ---------------------------------------------------------------------

    def _list(self, params: dict[str, str]) -> FakeList:
        found = self.lists.get(params["list_id"])
        if found is None:
            raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
        return found

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _new_merge_field(self, audience: FakeList, body: dict[str, Any]) -> dict[str, Any]:
        merge_id = len(audience.merge_fields) + 1
        item = {
            "merge_id": merge_id,
            "tag": body.get("tag") or f"MMERGE{merge_id}",
            "name": body["name"],
            "type": body["type"],
            "required": bool(body.get("required")),
            "default_value": "",
            "public": bool(body.get("public")),
            "display_order": merge_id,
            "options": dict(body.get("options") or {}),
            "help_text": "",
            "list_id": audience.id,
        }
        audience.merge_fields.append(item)
        return item

    def _create_member(
        self, audience: FakeList, email: str, status: str, merge_fields: dict[str, Any]
    ) -> dict[str, Any]:
        member_id = subscriber_hash(email)
        member = {
            "id": member_id,
            "email_address": email,
            "unique_email_id": member_id[:10],
            "status": status,
            "merge_fields": dict(merge_fields),
            "list_id": audience.id,
            "last_changed": now_text(),
        }
        audience.members[member_id] = member
        audience.history.setdefault(member_id, []).append(status)
        return member

    def _set_status(self, audience: FakeList, member: dict[str, Any], status: str) -> None:
        if member["status"] != status:
            member["status"] = status
            member["last_changed"] = now_text()
            audience.history.setdefault(member["id"], []).append(status)

    def _segment_named(self, audience: FakeList, name: str, create: bool = False) -> int:
        for sid, seg in audience.segments.items():
            if seg["name"] == name:
                return sid
        if not create:
            raise KeyError(name)
        sid = self._new_id()
        stamp = now_text()
        audience.segments[sid] = {
            "id": sid,
            "name": name,
            "member_count": 0,
            "type": "static",
            "created_at": stamp,
            "updated_at": stamp,
            "list_id": audience.id,
        }
        audience.segment_members[sid] = set()
        return sid

    def _merge_problem(
        self, fields: dict[str, dict[str, Any]], values: dict[str, Any]
    ) -> tuple[str, str] | None:
        """Why these merge values are refused (tag, reason); ``fields`` by tag, made once
        per call by ``_field_index``."""
        for tag, value in values.items():
            found = fields.get(tag)
            if found is None:
                return tag, "This merge field does not exist."
            if value == "":
                continue
            if not _valid_value(found["type"], value, found["options"].get("choices", ())):
                return tag, f"Please enter a valid {found['type']} value."
        return None


def _valid_value(kind: str, value: Any, choices: Iterable[str]) -> bool:
    """What Mailchimp accepts for a merge field of this type ("" clears any of them)."""
    if kind == "number":
        return isinstance(value, int | float) or _numeric(value)
    if kind == "date":
        return isinstance(value, str) and bool(_DATE.match(value))
    if kind == "birthday":
        return isinstance(value, str) and bool(_BIRTHDAY.match(value))
    if kind == "address":
        return isinstance(value, dict) and all(
            value.get(k) for k in ("addr1", "city", "state", "zip")
        )
    if kind in ("dropdown", "radio"):
        return value in choices
    return isinstance(value, str) and len(value) <= 255


def _numeric(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _problem(
    status: int, title: str, detail: str, extra: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": str(uuid.uuid4()),
    }
    headers = {"Content-Type": "application/problem+json; charset=utf-8", **(extra or {})}
    return status, headers, json.dumps(body).encode()


def _fault_answer(fault: Fault) -> tuple[int, dict[str, str], bytes]:
    extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    title = "Too Many Requests" if fault.status == 429 else "Internal Server Error"
    return _problem(fault.status, title, "injected by the test", extra)


# -- routes ---------------------------------------------------------------------------------

Handler = Callable[[FakeMailchimp, dict[str, str], dict[str, str], Any], tuple[int, Any]]
_HANDLERS: dict[tuple[str, str], Handler] = {}
_ROUTES: list[tuple[re.Pattern[str], str]] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[(method, template)] = func
        if all(t != template for _, t in _ROUTES):
            pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
            _ROUTES.append((re.compile(f"^{BASE_PATH}{pattern}$"), template))
        return func

    return register


def _route(method: str, path: str) -> tuple[str | None, dict[str, str]]:
    for pattern, template in _ROUTES:
        found = pattern.match(path)
        if found:
            return template, found.groupdict()
    return None, {}


def _page(items: list[Any], query: dict[str, str]) -> list[Any]:
    offset, count = int(query.get("offset", 0)), int(query.get("count", 10))
    return items[offset : offset + count]


def _only(item: dict[str, Any], query: dict[str, str], prefix: str) -> dict[str, Any]:
    wanted = [
        f[len(prefix) + 1 :]
        for f in query.get("fields", "").split(",")
        if f.startswith(prefix + ".")
    ]
    return {k: v for k, v in item.items() if k in wanted} if wanted else item


@route("GET", "/ping")
def _ping(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    return 200, {"health_status": "Everything's Chimpy!"}


@route("GET", "/lists/{list_id}")
def _get_list(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    return 200, {
        "id": audience.id,
        "name": audience.name,
        "stats": {
            "member_count": sum(m["status"] == "subscribed" for m in audience.members.values())
        },
    }


class MemberError(Exception):
    """One member of a batch refused, as an entry of the answer's ``errors``."""

    def __init__(self, text: str, code: str = "ERROR_GENERIC", fld: str = "", message: str = ""):
        super().__init__(text)
        self.entry = {"error": text, "error_code": code, "field": fld, "field_message": message}


def _compliance(email: str) -> MemberError:
    return MemberError(
        f"Member In Compliance State: {email} is in a compliance state due to "
        "unsubscribe, bounce, or compliance review and cannot be subscribed."
    )


def _field_index(audience: FakeList) -> dict[str, dict[str, Any]]:
    """The audience's merge fields by tag, for ``_merge_problem``."""
    return {f["tag"]: f for f in audience.merge_fields}


def _apply_entry(
    fake: FakeMailchimp,
    audience: FakeList,
    entry: dict[str, Any],
    update: bool,
    fields: dict[str, dict[str, Any]],
) -> tuple[bool, dict[str, Any]]:
    """Applies one batch entry; (created?, member) or MemberError. ``fields``: the
    audience's merge fields by tag (``_field_index``)."""
    email = entry.get("email_address", "")
    member_id = subscriber_hash(email)
    values = entry.get("merge_fields") or {}
    if not _EMAIL.match(email):
        raise MemberError(
            f"{email} looks fake or invalid, please enter a real email address.",
            fld="email_address",
            message="Please provide a valid email address.",
        )
    if email.lower() in fake.compliance_emails:
        raise _compliance(email)
    bad = fake._merge_problem(fields, values)
    if bad is not None:
        raise MemberError("Your merge fields were invalid.", fld=bad[0], message=bad[1])
    existing = audience.members.get(member_id)
    if existing is None or existing["status"] == "archived":
        if member_id in fake.forgotten:
            raise MemberError(
                f"Forgotten Email Not Subscribed: {email} was permanently deleted and cannot "
                "be re-imported. The contact must re-subscribe to get back on the list."
            )
        status = entry.get("status_if_new") or entry.get("status")
        if status is None:
            raise MemberError("The status of a new member is required.", fld="status")
        if existing is None:
            return True, fake._create_member(audience, email, status, values)
        existing["merge_fields"].update(values)
        fake._set_status(audience, existing, status)
        return True, existing
    if not update:
        raise MemberError(f"{email} is already a list member.", code="ERROR_CONTACT_EXISTS")
    target = entry.get("status")
    if target in ("subscribed", "pending", "transactional") and existing["status"] in OPTED_OUT:
        raise _compliance(email)
    if any(existing["merge_fields"].get(k) != v for k, v in values.items()):
        existing["merge_fields"].update(values)
        existing["last_changed"] = now_text()
    if target and not (existing["status"] == "cleaned" and target == "unsubscribed"):
        fake._set_status(audience, existing, target)
    return False, existing


@route("POST", "/lists/{list_id}")
def _batch_subscribe(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    members = body.get("members", [])
    if len(members) > MAX_MEMBERS:
        raise ApiError(
            400, "Invalid Resource", f"You can only add {MAX_MEMBERS} members per batch."
        )
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    fields = _field_index(audience)
    update = bool(body.get("update_existing"))
    for entry in members:
        email = entry.get("email_address", "")
        try:
            member_id = subscriber_hash(email)
            if member_id in seen:
                raise MemberError(f"{email} appears more than once in this batch.")
            seen.add(member_id)
            new, member = _apply_entry(fake, audience, entry, update, fields)
        except MemberError as exc:
            errors.append({"email_address": email, **exc.entry})
            continue
        (created if new else updated).append(member)
    view = ("id", "email_address", "unique_email_id", "status", "list_id", "last_changed")
    return 200, {
        "new_members": [{k: m[k] for k in view} for m in created],
        "updated_members": [{k: m[k] for k in view} for m in updated],
        "errors": errors,
        "total_created": len(created),
        "total_updated": len(updated),
        "error_count": len(errors),
    }


@route("GET", "/lists/{list_id}/members")
def _members(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    key = (audience.id, query.get("status"), query.get("since_last_changed"), len(audience.members))
    found = fake._listed.get(key) if int(query.get("offset", 0)) > 0 else None
    if found is None:
        since = query.get("since_last_changed")
        after = datetime.fromisoformat(since) if since is not None else None
        found = [
            m
            for m in audience.members.values()
            if ("status" not in query or m["status"] == query["status"])
            and (after is None or datetime.fromisoformat(m["last_changed"]) > after)
        ]
        found.sort(key=itemgetter("last_changed", "id"))
        # a few reads' at a time: a consent read-back reads two statuses side by side, and
        # each would otherwise filter the whole audience again for the other's next page
        fake._listed = {**dict(list(fake._listed.items())[-3:]), key: found}
    page = [_only(m, query, "members") for m in _page(found, query)]
    return 200, {"members": page, "total_items": len(found), "list_id": audience.id}


@route("DELETE", "/lists/{list_id}/members/{subscriber_hash}")
def _archive(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    member = audience.members.get(params["subscriber_hash"])
    if member is None or member["status"] == "archived":
        raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
    fake._set_status(audience, member, "archived")
    return 204, None


@route("PUT", "/lists/{list_id}/members/{subscriber_hash}")
def _put_member(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    """Adds or updates one member: the per-contact way a naive integration syncs (crmsync
    batches instead; ``bench/e2e/per_contact.py`` measures the difference)."""
    audience = fake._list(params)
    if subscriber_hash(body.get("email_address", "")) != params["subscriber_hash"]:
        raise ApiError(400, "Invalid Resource", "The subscriber hash does not match the address.")
    try:
        _, member = _apply_entry(fake, audience, body, True, _field_index(audience))
    except MemberError as exc:
        raise ApiError(400, "Invalid Resource", exc.entry["error"]) from exc
    view = ("id", "email_address", "unique_email_id", "status", "merge_fields", "list_id")
    return 200, {**{k: member[k] for k in view}, "last_changed": member["last_changed"]}


@route("POST", "/lists/{list_id}/members/{subscriber_hash}/tags")
def _member_tags(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    """Sets one member's tags active or inactive; an active tag that does not exist yet is
    created, an inactive one that does not exist is ignored (as Mailchimp does)."""
    audience = fake._list(params)
    member_id = params["subscriber_hash"]
    if member_id not in audience.members:
        raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
    for tag in body.get("tags") or ():
        active = tag.get("status") == "active"
        try:
            sid = fake._segment_named(audience, tag["name"], create=active)
        except KeyError:
            continue
        if active:
            audience.segment_members[sid].add(member_id)
        else:
            audience.segment_members[sid].discard(member_id)
    return 204, None


@route("POST", "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent")
def _delete_permanent(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    member_id = params["subscriber_hash"]
    if audience.members.pop(member_id, None) is None:
        raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
    for ids in audience.segment_members.values():
        ids.discard(member_id)
    fake.forgotten.add(member_id)
    return 204, None


@route("GET", "/lists/{list_id}/merge-fields")
def _merge_fields(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    return 200, {
        "merge_fields": _page(audience.merge_fields, query),
        "total_items": len(audience.merge_fields),
        "list_id": audience.id,
    }


@route("POST", "/lists/{list_id}/merge-fields")
def _add_merge_field(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    tag = body.get("tag", "")
    if tag and not _MERGE_TAG.match(tag):
        raise ApiError(400, "Invalid Resource", f"The merge tag {tag!r} is invalid.")
    if any(f["tag"] == tag for f in audience.merge_fields):
        raise ApiError(400, "Invalid Resource", f"A merge field with the tag {tag} already exists.")
    if len(audience.merge_fields) >= fake.merge_field_limit:
        raise ApiError(400, "Invalid Resource", "This audience has reached its merge field limit.")
    return 200, fake._new_merge_field(audience, body)


@route("PATCH", "/lists/{list_id}/merge-fields/{merge_id}")
def _patch_merge_field(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    for item in audience.merge_fields:
        if str(item["merge_id"]) == params["merge_id"]:
            item["name"] = body["name"]
            item["options"].update(body.get("options") or {})
            return 200, item
    raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")


@route("GET", "/lists/{list_id}/segments")
def _segments(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    found = [
        dict(s, member_count=len(audience.segment_members[s["id"]]))
        for s in audience.segments.values()
        if query.get("type") in (None, s["type"])
    ]
    page = [_only(s, query, "segments") for s in _page(found, query)]
    return 200, {"segments": page, "total_items": len(found), "list_id": audience.id}


@route("POST", "/lists/{list_id}/segments")
def _create_segment(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    name = body["name"]
    if len(name) > 100 or any(s["name"] == name for s in audience.segments.values()):
        raise ApiError(400, "Invalid Resource", f"A tag named {name[:40]!r} exists or is too long.")
    if "static_segment" in body and "options" in body:
        raise ApiError(400, "Invalid Resource", "static_segment cannot be provided with options.")
    sid = fake._segment_named(audience, name, create=True)
    # Per the spec: "Any emails provided that are not present on the list will be ignored."
    for email in body.get("static_segment") or ():
        if subscriber_hash(email) in audience.members:
            audience.segment_members[sid].add(subscriber_hash(email))
            fake.tagged_on_create += 1
    return 200, dict(audience.segments[sid], member_count=len(audience.segment_members[sid]))


@route("POST", "/lists/{list_id}/segments/{segment_id}")
def _segment_batch(
    fake: FakeMailchimp, params: dict[str, str], query: dict[str, str], body: Any
) -> tuple[int, Any]:
    audience = fake._list(params)
    sid = int(params["segment_id"]) if params["segment_id"].isdigit() else -1
    if sid not in audience.segments:
        raise ApiError(404, "Resource Not Found", "The requested resource could not be found.")
    adds, removes = body.get("members_to_add") or [], body.get("members_to_remove") or []
    if len(adds) > MAX_MEMBERS or len(removes) > MAX_MEMBERS:
        raise ApiError(400, "Invalid Resource", f"At most {MAX_MEMBERS} members per list.")
    ids = audience.segment_members[sid]
    added, removed, missing = [], [], []
    for email in adds:
        member = audience.members.get(subscriber_hash(email))
        if member is None:
            missing.append(email)
        elif member["id"] not in ids:
            ids.add(member["id"])
            added.append(member)
    for email in removes:
        member = audience.members.get(subscriber_hash(email))
        if member is not None and member["id"] in ids:
            ids.discard(member["id"])
            removed.append(member)
    view = ("id", "email_address", "status", "list_id")
    errors = (
        [{"email_addresses": missing, "error": "Email addresses do not belong to this list"}]
        if missing
        else []
    )
    return 200, {
        "members_added": [{k: m[k] for k in view} for m in added],
        "members_removed": [{k: m[k] for k in view} for m in removed],
        "errors": errors,
        "total_added": len(added),
        "total_removed": len(removed),
        "error_count": len(missing),
    }


# -- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def mailchimp_fake() -> Iterator[FakeMailchimp]:
    """A running fake; on teardown, spec violations and consent problems fail the test."""
    fake = FakeMailchimp().start()
    try:
        yield fake
    finally:
        fake.stop()
    problems = fake.violations + fake.consent_problems()
    assert not problems, "\n".join(problems[:20])


# the e-commerce routes register themselves on this module's table
from tests.fakes import mailchimp_ecommerce  # noqa: E402, F401
