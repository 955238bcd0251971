"""A fake Klaviyo API (revision 2026-07-15) speaking real HTTP on 127.0.0.1, strict about the spec.

Every request is validated against ``../shared/specs/klaviyo/{profiles,lists,events}.json``
with openapi-core (path, query, headers, body; and the first answers of every route too, so
the fake cannot drift from the real API). A request the spec does not allow is answered 400
in Klaviyo's JSON:API error shape and recorded in ``violations``; the ``klaviyo_fake``
fixture fails the test when that list is not empty, and checks the consent invariant: nobody
who unsubscribed or was suppressed is subscribed again, and nobody the test did not declare
as consenting (``expect_consented``) ends up subscribed.

The specs are read in memory as OpenAPI 3.1 (the shared files are never changed): Klaviyo's
3.0 files put ``nullable: true`` beside a ``$ref``, an ``allOf`` or a ``oneOf`` without a
``type`` (78 times), which 3.0 validators either skip or read as "null is refused", so every
nullable schema becomes ``type: [..., "null"]`` or ``anyOf: [schema, {type: null}]``.
Objects that request bodies reach are closed (``additionalProperties: false``): Klaviyo
answers 400 "'x' is not a valid field for the resource" to unknown fields.

Behaviour modelled on Klaviyo: ``Authorization: Klaviyo-API-Key <key>``; a ``revision``
header (YYYY-MM-DD[.suffix]); per-operation scopes (``x-klaviyo-scopes``; a ``:write`` scope
grants ``:read``, as "Full Access" does); per-operation burst/steady/daily fixed-window rate
limits (``x-klaviyo-ratelimit``) with ``RateLimit-*`` headers, and ``Retry-After`` on 429;
profiles upserted by id, email, phone number or external id (null clears a field or a
property, absent keys stay), with a 409 ``duplicate_profile`` when the identifiers name two
profiles; bulk import jobs (10,000 profiles, 5 MB, 100 KB a profile) that go queued ->
processing -> complete and apply only when complete, invalid profiles becoming import errors
that carry their original payload; subscribe (1,000) and unsubscribe (100) jobs, applied when
accepted since the spec has no GET for them, with historical imports, double opt-in lists and
suppressions; suppression jobs (100 addresses, or a list's members) that go queued ->
processing -> complete like imports and only then suppress each address (reason
USER_SUPPRESSED, e-mail consent UNSUBSCRIBED, as Klaviyo shows it; a missing profile is
created; an address already USER_SUPPRESSED is skipped and counted), visible to profile reads
and to the suppression filters the consent read-back uses; unsuppress jobs are not served
(crmsync never lifts a suppression: a call is a violation); lists with a daily creation cap
(150/d) and profile relationships (1,000 ids a call, unknown ids refuse the call); filters,
sorting, sparse fieldsets and cursor pagination.
Events are taken by the bulk create endpoint (1,000 events and 5 MB a call, 100 KB a
string, times from 1990 to a year ahead): the call is validated as a whole and refused
with one error per wrong entry or event (nothing of it recorded), or each event is
recorded once per profile, metric and unique id (a repeat within one call refuses the
call; a unique id recorded earlier is dropped silently), creating the profile by e-mail
or phone without touching its consent; ``backfill`` events are kept as not triggering
flows.
The fake has no tags, flows, segments or push tokens, and reads no events back: includes
of them come back empty and their routes answer 404 with a violation. Faults (5xx, 429,
dropped connections), storms and latency are injectable; call counters are public.
"""

from __future__ import annotations

import base64
import bisect
import copy
import json
import math
import os
import random
import re
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from jsonschema.exceptions import ValidationError, best_match
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.fakes.serving import DROP, Answer, Fault, Faults, Served

# The workplace's shared folder sits beside the checkout; CRMSYNC_SHARED names another.
SHARED = Path(os.environ.get("CRMSYNC_SHARED") or Path(__file__).resolve().parents[3] / "shared")
SPEC_DIR = SHARED / "specs" / "klaviyo"
SPEC_NAMES = ("profiles", "lists", "events")
SPEC_HOST = "https://a.klaviyo.com"  # the spec's server; its paths carry /api
REVISION = "2026-07-15"
MEDIA_TYPE = "application/vnd.api+json"
DEFAULT_SCOPES = frozenset(
    {
        "profiles:read",
        "profiles:write",
        "lists:read",
        "lists:write",
        "subscriptions:write",
        "events:write",
    }
)
MAX_IMPORT_PROFILES = 10_000  # bulk import: profiles per job
MAX_IMPORT_BYTES = 5 * 1024 * 1024  # bulk import: body size
MAX_PROFILE_BYTES = 100 * 1024  # one profile, in a job or alone
MAX_SUBSCRIBE = 1_000  # subscribe job: profiles per call
MAX_UNSUBSCRIBE = 100  # unsubscribe job: profiles per call
MAX_SUPPRESS = 100  # suppression job: e-mail addresses per call
MAX_LIST_IDS = 1_000  # list relationship add/remove: ids per call
MAX_EVENTS = 1_000  # bulk create events: events per call
MAX_EVENT_BYTES = 5 * 1024 * 1024  # bulk create events: body size
MAX_EVENT_STRING = 100 * 1024  # bulk create events: one string
MAX_METRIC_NAME = 127  # "less than 128 characters"
EARLIEST_EVENT = datetime(1990, 1, 1, tzinfo=UTC)  # "after the year 1990"
JOB_LIFETIME = timedelta(days=7)
LIFTED_BY_SUBSCRIBE = frozenset({"UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED"})
SUPPRESSION_REASONS = (  # the spec's enum; UNSUBSCRIBE comes with unsubscribe()
    "HARD_BOUNCE",
    "INVALID_EMAIL",
    "SPAM_COMPLAINT",
    "USER_SUPPRESSED",
)
PROFILE_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "latitude",
    "longitude",
    "region",
    "zip",
    "timezone",
    "ip",
)
IDENTIFIERS = ("email", "phone_number", "external_id")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164
_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")
_RATE = re.compile(r"^(\d+)/([smd])$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def now() -> datetime:
    return datetime.now(UTC)


def stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _key(email: str) -> str:
    return email.strip().lower()


# -- the spec -------------------------------------------------------------------------------


def as_openapi31(node: Any) -> Any:
    """Klaviyo's OpenAPI 3.0 schemas rewritten with 3.1's explicit nulls.

    ``nullable: true`` only means something beside a ``type`` in 3.0, and a ``$ref`` hides
    its siblings; Klaviyo's files use it beside ``$ref``, ``allOf`` and ``oneOf`` (78 times),
    where validators either skip the check or refuse the documented ``null``.
    """
    if isinstance(node, list):
        return [as_openapi31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_openapi31(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is not True:
        return out
    if "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    notes = {key: out.pop(key) for key in ("description", "default", "example") if key in out}
    if not out:  # nullable and nothing else: anything goes
        return notes
    return {**notes, "anyOf": [out, {"type": "null"}]}


def _close_request_schemas(document: dict[str, Any]) -> None:
    """Closes every object schema a request body reaches (unknown fields are refused)."""
    schemas = document.get("components", {}).get("schemas", {})
    seen: set[str] = set()

    def close(schema: Any) -> None:
        if isinstance(schema, list):
            for item in schema:
                close(item)
            return
        if not isinstance(schema, dict):
            return
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                close(schemas[name])
        if "allOf" in schema:  # a part of an allOf cannot be closed alone (none here today)
            return
        if isinstance(schema.get("properties"), dict) and schema["properties"]:
            schema.setdefault("additionalProperties", False)
            close(list(schema["properties"].values()))
        for key in ("items", "anyOf", "oneOf", "not"):
            if key in schema:
                close(schema[key])

    for item in document.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                for media in operation["requestBody"].get("content", {}).values():
                    close(media.get("schema"))


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: str
    operation_id: str
    scopes: tuple[str, ...]
    limits: dict[str, int]  # "burst"/"steady"/"daily" -> requests per window
    filters: dict[str, Any]
    pattern: re.Pattern[str]


def _spec_path(name: str) -> Path:
    return SPEC_DIR / f"{name}.json"


@cache
def _documents() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in SPEC_NAMES:
        path = _spec_path(name)
        if not path.is_file():
            raise FileNotFoundError(
                f"the Klaviyo OpenAPI spec is not at {path}: the fake validates every request "
                "against it; keep the shared folder beside the checkout (../shared) or set "
                "CRMSYNC_SHARED to it"
            )
        found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def original(name: str) -> dict[str, Any]:
    """One spec as the shared folder has it (a copy: OpenAPI 3.0, open objects)."""
    return copy.deepcopy(_documents()[name])


def rewritten(name: str) -> dict[str, Any]:
    """One spec as the fake reads it: OpenAPI 3.1, request bodies closed."""
    document: dict[str, Any] = as_openapi31(_documents()[name])
    document["openapi"] = "3.1.0"
    _close_request_schemas(document)
    return document


@cache
def specs() -> dict[str, OpenAPI]:
    """The three specs, rewritten, ready for openapi-core."""
    # The rewritten documents are checked against the OpenAPI 3.1 schema by a test of the
    # fake (test_klaviyo_fake.py), not here: that check costs seconds per start.
    config = Config(
        extra_media_type_deserializers={MEDIA_TYPE: _json_media}, spec_validator_cls=None
    )
    built: dict[str, OpenAPI] = {}
    for name in SPEC_NAMES:
        built[name] = OpenAPI.from_dict(rewritten(name), config=config)
    return built


def _json_media(value: bytes, **parameters: str) -> Any:
    return json.loads(value)


@cache
def operations() -> tuple[Operation, ...]:
    """Every operation of the specs, most literal templates first (for matching)."""
    found: list[Operation] = []
    for name, raw in _documents().items():
        for template, item in raw["paths"].items():
            for method, operation in item.items():
                if not isinstance(operation, dict) or "operationId" not in operation:
                    continue
                limits = {}
                for kind, text in (operation.get("x-klaviyo-ratelimit") or {}).items():
                    matched = _RATE.match(str(text))
                    if matched and kind in ("burst", "steady", "daily"):
                        limits[kind] = int(matched.group(1))
                pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
                found.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        spec=name,
                        operation_id=operation["operationId"],
                        scopes=tuple(operation.get("x-klaviyo-scopes") or ()),
                        limits=limits,
                        filters=operation.get("x-klaviyo-filters") or {},
                        pattern=re.compile(f"^{pattern}$"),
                    )
                )
    found.sort(key=lambda op: -sum("{" not in part for part in op.template.split("/")))
    return tuple(found)


def find_operation(method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
    """(operation, path parameters, whether the path exists for another method)."""
    other = False
    for operation in operations():
        matched = operation.pattern.match(path)
        if matched is None:
            continue
        if operation.method == method:
            return operation, matched.groupdict(), True
        other = True
    return None, {}, other


@dataclass
class SpecRequest:
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
class SpecResponse:
    status_code: int
    data: bytes | None
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SpecProblem:
    text: str  # for the violation list
    detail: str  # for the client's 400
    pointer: str | None = None
    parameter: str | None = None


def spec_problem(
    spec_name: str, request: SpecRequest, response: SpecResponse | None = None
) -> SpecProblem | None:
    """Why the spec refuses this request (or response), or None when it is valid."""
    try:
        if response is None:
            specs()[spec_name].validate_request(request)
        else:
            specs()[spec_name].validate_response(request, response)
    except Exception as exc:  # openapi-core raises a family of errors; all are violations
        return _describe(exc)
    return None


def _describe(exc: BaseException) -> SpecProblem:
    errors: list[ValidationError] = []
    parameter: str | None = None
    chain: BaseException | None = exc
    while chain is not None and len(errors) < 20:
        errors.extend(getattr(chain, "schema_errors", None) or ())
        name = getattr(chain, "name", None)  # set on a parameter's error
        if parameter is None and isinstance(name, str):
            parameter = name
        chain = chain.__cause__ or chain.__context__
    if not errors:
        text = f"{type(exc).__name__}: {str(exc)[:300]}"
        return SpecProblem(text, str(exc)[:300], parameter=parameter)
    leaves = [_leaf(error) for error in errors]
    where = [parameter or "/" + "/".join(str(p) for p in leaf.absolute_path) for leaf in leaves]
    first = leaves[0]
    if first.validator == "additionalProperties":
        extra = re.findall(r"'([^']+)' (?:was|were) unexpected", first.message)
        unexpected = extra[0] if extra else first.message
        detail = f"'{unexpected}' is not a valid field for the resource at {where[0]}."
    else:
        detail = f"{where[0]}: {first.message[:300]}"
    parts = "; ".join(
        f"{w}: {leaf.message[:200]}" for w, leaf in zip(where[:5], leaves[:5], strict=True)
    )
    pointer = None if parameter else where[0]
    return SpecProblem(f"{type(exc).__name__}: {parts}", detail, pointer, parameter)


def _leaf(error: ValidationError) -> ValidationError:
    """The most telling error under an anyOf/oneOf (never "is not of type 'null'")."""
    while error.context:
        useful = [
            e for e in error.context if not (e.validator == "type" and e.validator_value == "null")
        ]
        chosen = best_match(useful or error.context)
        if chosen is None:
            break
        error = chosen
    return error


# -- filters ----------------------------------------------------------------------------------


class FilterError(Exception):
    pass


_FILTER_TOKEN = re.compile(
    r"""\s*(?:(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<punct>[(),\[\]])"""
    r"""|(?P<word>[^\s(),\[\]"']+))"""
)
SUPPRESSION_TIME = "subscriptions.email.marketing.suppression.timestamp"
_COMPARISONS = ("greater-than", "greater-or-equal", "less-than", "less-or-equal")


@dataclass
class Condition:
    operator: str
    field: str
    value: Any


@dataclass
class Junction:
    operator: str  # and / or / not
    parts: list[Condition | Junction]


def parse_filter(text: str, allowed: dict[str, Any]) -> Junction:
    """Klaviyo's filter syntax, e.g. ``equals(email,"a@b.c"),greater-than(updated,2024-01-01)``
    (a top-level comma means and); fields and operators are checked against the operation's
    ``x-klaviyo-filters``."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        matched = _FILTER_TOKEN.match(text, position)
        if matched is None or matched.end() == position:
            raise FilterError(f"cannot read the filter at {text[position:][:30]!r}")
        kind = matched.lastgroup or ""
        tokens.append((kind, matched.group(kind)))
        position = matched.end()
    cursor = 0

    def peek() -> str:
        if cursor >= len(tokens):
            raise FilterError("the filter ends too early")
        return tokens[cursor][1]

    def take(expected: str | None = None) -> tuple[str, str]:
        nonlocal cursor
        peek()
        token = tokens[cursor]
        if expected is not None and token[1] != expected:
            raise FilterError(f"expected {expected!r} in the filter, found {token[1]!r}")
        cursor += 1
        return token

    def value() -> Any:
        kind, text_ = take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text_[1:-1])
        if text_ == "[":
            items = []
            while peek() != "]":
                items.append(value())
                if peek() == ",":
                    take(",")
            take("]")
            return items
        if kind != "word":
            raise FilterError(f"unexpected {text_!r} in the filter")
        if text_ in ("true", "false"):
            return text_ == "true"
        if text_ == "null":
            return None
        try:
            return _instant(text_)
        except ValueError:
            pass
        try:
            return float(text_) if "." in text_ else int(text_)
        except ValueError:
            raise FilterError(f"{text_!r}: strings in filters must be quoted") from None

    def expression() -> Condition | Junction:
        kind, name = take()
        if kind != "word":
            raise FilterError(f"expected an operator, found {name!r}")
        take("(")
        if name in ("and", "or", "not"):
            parts = [expression()]
            while peek() == ",":
                take(",")
                parts.append(expression())
            take(")")
            if name == "not" and len(parts) != 1:
                raise FilterError("not() takes one expression")
            return Junction(name, parts)
        _, field_name = take()
        take(",")
        operand = value()
        take(")")
        _check_filter(name, field_name, operand, allowed)
        return Condition(name, field_name, operand)

    parts = [expression()]
    while cursor < len(tokens):
        take(",")
        parts.append(expression())
    return Junction("and", parts)


def _check_filter(operator: str, field_name: str, operand: Any, allowed: dict[str, Any]) -> None:
    spec = allowed.get(field_name)
    if spec is None:
        raise FilterError(f"'{field_name}' is not a valid filter field for this endpoint")
    groups = spec.get("operators", {})
    permitted = {op for ops in groups.values() for op in ops}
    if operator not in permitted:
        raise FilterError(f"'{operator}' is not a valid operator for '{field_name}'")
    if operator == "any" and not isinstance(operand, list):
        raise FilterError(f"any({field_name},...) takes a list")
    is_time = spec.get("value", {}).get("format") == "date-time"
    if operator in _COMPARISONS and is_time and not isinstance(operand, datetime):
        raise FilterError(f"'{field_name}' compares with a date-time")


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def matches(node: Condition | Junction, values: Callable[[str], list[Any]]) -> bool:
    if isinstance(node, Junction):
        results = [matches(part, values) for part in node.parts]
        if node.operator == "and":
            return all(results)
        if node.operator == "or":
            return any(results)
        return not results[0]
    found = [_comparable(v) for v in values(node.field)]
    operand = node.value
    if node.operator in ("equals", "any"):
        wanted = operand if isinstance(operand, list) else [operand]
        targets = {_comparable(w) for w in wanted}
        return any(v in targets for v in found)
    for value in found:  # comparisons: _check_filter made the operand a date-time
        if value is None or not isinstance(value, type(operand)):
            continue
        if (
            (node.operator == "greater-than" and value > operand)
            or (node.operator == "greater-or-equal" and value >= operand)
            or (node.operator == "less-than" and value < operand)
            or (node.operator == "less-or-equal" and value <= operand)
        ):
            return True
    return False


def _comparable(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# -- state ------------------------------------------------------------------------------------


@dataclass
class Consent:
    """One channel's marketing consent (email carries suppressions too)."""

    consent: str = "NEVER_SUBSCRIBED"
    consent_timestamp: datetime | None = None
    last_updated: datetime | None = None
    method: str | None = None
    method_detail: str | None = None
    custom_method_detail: str | None = None
    double_optin: bool | None = None
    suppression: list[dict[str, Any]] = field(default_factory=list)
    list_suppressions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Profile:
    id: str
    created: datetime
    updated: datetime
    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    organization: str | None = None
    locale: str | None = None
    title: str | None = None
    image: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    email_marketing: Consent = field(default_factory=Consent)
    sms_marketing: Consent = field(default_factory=Consent)
    opted_out: set[str] = field(default_factory=set)  # channels ever unsubscribed/suppressed

    def channel(self, name: str) -> Consent:
        return self.email_marketing if name == "email" else self.sms_marketing

    @property
    def label(self) -> str:
        return self.email or self.phone_number or self.external_id or self.id


@dataclass
class FakeList:
    id: str
    name: str
    created: datetime
    updated: datetime
    opt_in_process: str = "single_opt_in"
    members: dict[str, datetime] = field(default_factory=dict)  # profile id -> joined


@dataclass
class FakeEvent:
    """One recorded event (Klaviyo keeps one per profile, metric and unique id)."""

    id: str
    metric: str
    profile_id: str
    time: datetime
    unique_id: str
    properties: dict[str, Any]
    value: float | None = None
    value_currency: str | None = None
    backfill: bool = False  # recorded without triggering flows


@dataclass
class ImportJob:
    id: str
    created_at: datetime
    created_clock: float
    entries: list[dict[str, Any]]
    list_ids: list[str]
    status: str = "queued"
    polls: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    profile_ids: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SuppressionJob:
    """A bulk suppression: applied when complete, like an import job."""

    id: str
    created_at: datetime
    created_clock: float
    emails: list[str]
    list_id: str | None = None
    status: str = "queued"
    polls: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    completed_count: int = 0
    skipped_count: int = 0  # addresses already USER_SUPPRESSED


@dataclass
class RateWindow:
    index: int = -1
    count: int = 0


class ApiError(Exception):
    """An answer in Klaviyo's JSON:API error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = "/data/",
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        others: list[ApiError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.pointer, self.parameter = pointer, parameter
        self.meta, self.headers = meta or {}, headers or {}
        self.others = others or []  # more errors of the same answer (a bulk call's entries)

    def document(self) -> dict[str, Any]:
        errors = [self._error()]
        errors.extend(other._error() for other in self.others)
        return {"errors": errors}

    def _error(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.parameter is not None:
            source["parameter"] = self.parameter
        elif self.pointer is not None:
            source["pointer"] = self.pointer
        error = {
            "id": str(uuid.uuid4()),
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": source,
            "links": {},
            "meta": self.meta,
        }
        return error


def invalid(detail: str, pointer: str | None = "/data/", parameter: str | None = None) -> ApiError:
    return ApiError(400, "invalid", "Invalid input.", detail, pointer=pointer, parameter=parameter)


def not_found(kind: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", "Not found.", f"A {kind} with id {ident} does not exist.")


@dataclass
class Call:
    """What a route handler sees of one request."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    base: str
    operation: Operation

    def values(self, key: str) -> list[str]:
        raw = self.query.get(key)
        return [v for v in raw.split(",") if v] if raw else []

    def url(self, query: dict[str, str] | None = None) -> str:
        pairs = self.query if query is None else query
        return f"{self.base}{self.path}" + (f"?{urlencode(pairs)}" if pairs else "")


class FakeKlaviyo:
    """The fake's state, knobs and counters; ``start()`` serves it on a random port."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        job_polls_until_complete: int | None = 2,
        job_seconds_until_complete: float | None = None,
        defer_subscription_jobs: bool = False,
        rate_limits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
        validate_responses: int = 5,
        validate: bool = True,
    ) -> None:
        self.api_key = api_key or f"pk_{uuid.uuid4().hex}"
        self.scopes = set(scopes)
        # A bulk import or suppression job is complete on the Nth GET of it (processing
        # before), or once job_seconds_until_complete have passed on ``clock``; None turns
        # that rule off, and finish_jobs() completes everything at once.
        self.job_polls_until_complete = job_polls_until_complete
        self.job_seconds_until_complete = job_seconds_until_complete
        # The spec has no GET for subscription jobs: they apply as they are accepted, or,
        # deferred, when the test calls finish_jobs().
        self.defer_subscription_jobs = defer_subscription_jobs
        # Klaviyo's job ids are its own: a test may start them with text of its choice,
        # e.g. to sort them after crmsync's own job names
        self.job_id_prefix = ""
        self.rate_limits_enabled = rate_limits
        self.clock = clock
        self.latency = latency
        self.validate = validate
        # Responses are checked for the first few answers of every route: enough to keep
        # the fake's shapes honest without re-validating 100-profile pages all day.
        self.validate_responses = validate_responses
        self._responses_checked: Counter[tuple[str, str]] = Counter()
        self.limits: dict[tuple[str, str], dict[str, int]] = {}
        self._windows: dict[tuple[str, str, str], RateWindow] = {}
        self.profiles: dict[str, Profile] = {}
        # (filter, sort) -> the profiles it matched at its first page (``_get_profiles``)
        self.matched: dict[tuple[str | None, str | None], list[Profile]] = {}
        # every e-mail suppression (time, profile id), in time order, for filters on the
        # suppression time; rebuilt when ``suppressions_changed`` moved since
        self.suppressions_changed = 0
        self._suppression_times: tuple[int, list[tuple[datetime, str]]] = (-1, [])
        self._by_email: dict[str, str] = {}
        self._by_phone: dict[str, str] = {}
        self._by_external: dict[str, str] = {}
        self.lists: dict[str, FakeList] = {}
        self.jobs: dict[str, ImportJob] = {}
        self.suppression_jobs: dict[str, SuppressionJob] = {}
        self.pending_subscriptions: list[Callable[[], None]] = []
        self.events: dict[str, list[FakeEvent]] = {}  # metric name -> events, in order
        self._event_keys: set[tuple[str, str, str]] = set()  # (profile id, metric, unique id)
        self.duplicate_events = 0  # events dropped because their unique id was recorded
        self.confirmations_sent: dict[str, str] = {}  # email -> list id awaiting double opt-in
        self.consented_emails: set[str] | None = None
        self.consented_phones: set[str] = set()
        self.resubscriptions: list[str] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        self.write_calls = 0
        self.rate_limited = 0
        self.violations: list[str] = []
        self.faults = Faults()
        self.inject = self.faults.inject
        self.storm_rate = 0.0
        self.storm_statuses: tuple[int | Literal["drop"], ...] = (500, 503, 429, DROP)
        self._storm_rng = random.Random(7)
        self._rng = random.Random(11)
        self._ulid_ms = 0
        self._ulid_seq = 0
        self._lock = threading.RLock()
        self._served = Served(self, (500, {"Content-Type": MEDIA_TYPE}, b'{"errors": []}'))

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeKlaviyo:
        # A missing spec fails here, once and plainly: the routes, scopes and rate limits
        # come from it even when validation is off.
        for operation in operations():
            self.limits.setdefault((operation.method, operation.template), dict(operation.limits))
        missing = [key for key in _HANDLERS if key not in self.limits]
        if missing:
            raise RuntimeError(f"the fake serves routes the spec does not have: {missing}")
        if self.validate:
            specs()
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop()

    @property
    def base_url(self) -> str:
        """The server URL (the spec's ``https://a.klaviyo.com``); paths start with /api."""
        return f"{self._served.origin}"

    def headers(self, revision: str = REVISION) -> dict[str, str]:
        """What a well-behaved client sends with every request."""
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": revision,
            "Accept": MEDIA_TYPE,
            "Content-Type": MEDIA_TYPE,
        }

    # -- knobs ---------------------------------------------------------------------

    def storm(
        self,
        rate: float,
        statuses: Iterable[int | Literal["drop"]] = (500, 503, 429, DROP),
        seed: int = 7,
    ) -> None:
        """A fraction ``rate`` of the following requests fail with one of ``statuses``."""
        with self._lock:
            self.storm_rate, self.storm_statuses = rate, tuple(statuses)
            self._storm_rng = random.Random(seed)

    def set_rate_limit(
        self,
        method: str,
        template: str,
        *,
        burst: int | None = None,
        steady: int | None = None,
        daily: int | None = None,
    ) -> None:
        """Overrides one operation's limits (None keeps the spec's value for that window)."""
        key = (method.upper(), template)
        with self._lock:
            limits = self.limits.setdefault(key, {})
            for kind, value in (("burst", burst), ("steady", steady), ("daily", daily)):
                if value is not None:
                    limits[kind] = value
            for kind in ("burst", "steady", "daily"):
                self._windows.pop((*key, kind), None)

    def expect_consented(self, emails: Iterable[str], phones: Iterable[str] = ()) -> None:
        """The people the test allows to end up subscribed (email and SMS)."""
        self.consented_emails = {_key(e) for e in emails}
        self.consented_phones = set(phones)

    def finish_jobs(self) -> None:
        """Completes every bulk import and suppression job and applies every deferred
        subscription job."""
        with self._lock:
            for job in self.jobs.values():
                if job.status != "complete":
                    self._complete(job)
            for suppression in self.suppression_jobs.values():
                if suppression.status != "complete":
                    self._suppress_all(suppression)
            pending, self.pending_subscriptions = self.pending_subscriptions, []
            for apply in pending:
                apply()

    def finish_job(self, job_id: str) -> None:
        """Completes one bulk import job."""
        with self._lock:
            job = self.jobs[job_id]
            if job.status != "complete":
                self._complete(job)

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.write_calls = 0
            self.rate_limited = 0

    # -- seeding ("in Klaviyo") -----------------------------------------------------

    def add_profile(
        self,
        email: str | None = None,
        phone_number: str | None = None,
        external_id: str | None = None,
        *,
        properties: dict[str, Any] | None = None,
        email_consent: str = "NEVER_SUBSCRIBED",
        sms_consent: str = "NEVER_SUBSCRIBED",
        at: datetime | None = None,
        **attributes: Any,
    ) -> Profile:
        values = {"email": email, "phone_number": phone_number, "external_id": external_id}
        with self._lock:
            taken = [v for name, v in values.items() if self._lookup(name, v) is not None]
            if taken:
                raise ValueError(f"another profile already has {taken}")
            moment = at or now()
            profile = Profile(self._ulid(), moment, moment)
            self.profiles[profile.id] = profile
            for name, value in {**values, **attributes}.items():
                setattr(profile, name, value)
            profile.properties = dict(properties or {})
            self._reindex(profile, dict.fromkeys(IDENTIFIERS))
            for channel, consent in (("email", email_consent), ("sms", sms_consent)):
                state = profile.channel(channel)
                state.consent, state.last_updated = consent, moment
                if consent == "SUBSCRIBED":
                    state.consent_timestamp = moment
                if consent == "UNSUBSCRIBED":
                    profile.opted_out.add(channel)
            return profile

    def delete_profile(self, email: str) -> None:
        """The profile deleted in Klaviyo's app: gone from every lookup and list."""
        with self._lock:
            found = self.profile(email)
            assert found is not None, email
            del self.profiles[found.id]
            self._by_email.pop(_key(email), None)
            if found.phone_number:
                self._by_phone.pop(found.phone_number, None)
            if found.external_id:
                self._by_external.pop(found.external_id, None)
            for listed in self.lists.values():
                listed.members.pop(found.id, None)
            self.suppressions_changed += 1

    def add_list(self, name: str, opt_in_process: str = "single_opt_in") -> FakeList:
        with self._lock:
            moment = now()
            found = FakeList(self._list_id(), name, moment, moment, opt_in_process)
            self.lists[found.id] = found
            return found

    def unsubscribe(self, email: str, at: datetime | None = None) -> None:
        """The person clicks an unsubscribe link (a global unsubscribe, as Klaviyo records)."""
        with self._lock:
            profile = self._require(email)
            self._unsubscribe_email(profile, at or now(), None)

    def suppress(self, email: str, reason: str = "HARD_BOUNCE", at: datetime | None = None) -> None:
        """Klaviyo suppresses the address (a bounce, a spam complaint, an invalid address)."""
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"Klaviyo has no suppression reason {reason!r}")
        with self._lock:
            profile = self._require(email)
            moment = at or now()
            profile.email_marketing.suppression.append({"reason": reason, "timestamp": moment})
            self.suppressions_changed += 1
            profile.email_marketing.last_updated = moment
            profile.opted_out.add("email")
            profile.updated = max(profile.updated, moment)

    def confirm(self, email: str) -> None:
        """The person clicks the double opt-in confirmation."""
        with self._lock:
            list_id = self.confirmations_sent.pop(_key(email))
            profile = self._require(email)
            self._subscribe_channel(profile, "email", now(), None, None, list_id)

    # -- inspection ------------------------------------------------------------------

    def suppressed_between(self, bounds: Sequence[Condition]) -> list[Profile]:
        """The profiles with an e-mail suppression within ``bounds`` (comparisons on its
        time), by id: from the suppressions in time order, not a scan of every profile."""
        version, times = self._suppression_times
        if version != self.suppressions_changed:
            times = sorted(
                (entry["timestamp"], profile.id)
                for profile in self.profiles.values()
                for entry in profile.email_marketing.suppression
            )
            self._suppression_times = (self.suppressions_changed, times)
        low, high = 0, len(times)
        for bound in bounds:  # inclusive either way: the whole filter is applied after
            if bound.operator.startswith("greater"):
                low = max(low, bisect.bisect_left(times, (bound.value, "")))
            else:
                high = min(high, bisect.bisect_right(times, (bound.value, "\uffff")))
        found = {ident for _, ident in times[low:high]}
        return sorted((self.profiles[i] for i in found if i in self.profiles), key=lambda p: p.id)

    def profile(self, email: str) -> Profile | None:
        found = self._by_email.get(_key(email))
        return self.profiles[found] if found else None

    def profile_by_phone(self, phone_number: str) -> Profile | None:
        found = self._by_phone.get(phone_number)
        return self.profiles[found] if found else None

    def properties(self, email: str) -> dict[str, Any]:
        return dict(self._require(email).properties)

    def lists_named(self, name: str) -> list[FakeList]:
        return [found for found in self.lists.values() if found.name == name]

    def members(self, list_name: str) -> set[str]:
        """The labels (email, else phone, else external id) of one named list's members."""
        named = self.lists_named(list_name)
        assert len(named) == 1, f"{len(named)} lists are named {list_name!r}"
        return {self.profiles[pid].label for pid in named[0].members if pid in self.profiles}

    def lists_of(self, email: str) -> set[str]:
        profile = self._require(email)
        return {found.name for found in self.lists.values() if profile.id in found.members}

    def subscriptions(self, channel: str = "email") -> dict[str, str]:
        """Label -> marketing consent on one channel ("email" or "sms")."""
        return {p.label: p.channel(channel).consent for p in self.profiles.values()}

    def suppressions(self, email: str) -> list[str]:
        return [s["reason"] for s in self._require(email).email_marketing.suppression]

    def writes(self) -> int:
        return self.write_calls

    def events_named(self, metric: str) -> list[FakeEvent]:
        return list(self.events.get(metric, []))

    def event_count(self) -> int:
        return sum(len(found) for found in self.events.values())

    def events_of(self, email: str) -> list[FakeEvent]:
        """One profile's events, every metric, oldest first."""
        profile = self._require(email)
        found = [e for events in self.events.values() for e in events]
        return sorted((e for e in found if e.profile_id == profile.id), key=lambda e: e.time)

    def consent_problems(self) -> list[str]:
        """Re-subscriptions of people who opted out, and subscriptions nobody consented to."""
        problems = list(self.resubscriptions)
        for profile in self.profiles.values():
            for channel in ("email", "sms"):
                if profile.channel(channel).consent != "SUBSCRIBED":
                    continue
                ident = profile.email if channel == "email" else profile.phone_number
                if self.consented_emails is None:
                    problems.append(
                        f"{profile.label} is subscribed to {channel} but the test declared "
                        "no consent set"
                    )
                elif channel == "email" and _key(ident or "") not in self.consented_emails:
                    problems.append(f"{profile.label} is subscribed to email without consent")
                elif channel == "sms" and ident not in self.consented_phones:
                    problems.append(f"{profile.label} is subscribed to SMS without consent")
        return problems

    # -- request handling ------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer | None:
        """One request's answer, or None to drop the connection without one."""
        split = urlsplit(target)
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        operation, params, other_method = find_operation(method, split.path)
        template = operation.template if operation else split.path
        with self._lock:
            self.calls[(method, template)] += 1
            if method != "GET":
                self.write_calls += 1
        if operation is None:
            self._violation(f"{method} {split.path}: no such operation in the Klaviyo spec")
            if other_method:
                return _error(
                    ApiError(
                        405,
                        "method_not_allowed",
                        "Method not allowed.",
                        f'Method "{method}" not allowed.',
                        pointer=None,
                    )
                )
            return _error(ApiError(404, "not_found", "Not found.", "Not found.", pointer=None))
        try:
            self._authorise(headers, operation)
            limit_headers = self._admit(operation)
        except ApiError as exc:
            return _error(exc)
        if self.latency:
            time.sleep(self.latency)
        answer = self._serve(operation, params, split.path, query_pairs, headers, body)
        if answer is not None and answer[0] != 429:
            answer[1].update(limit_headers)
        return answer

    def _serve(
        self,
        operation: Operation,
        params: dict[str, str],
        path: str,
        query_pairs: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Answer | None:
        method = operation.method
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and media not in (MEDIA_TYPE, "application/json"):
            self._violation(f"{method} {path}: a body of type {media or 'none'}")
            return _error(
                ApiError(415, "unsupported_media_type", "Unsupported media type.", media or "none")
            )
        try:
            self._check_size(operation, body)
            payload = json.loads(body) if body else None
        except ApiError as exc:
            return _error(exc)
        except ValueError:
            self._violation(f"{method} {path}: the body is not JSON")
            return _error(invalid("The request body is not valid JSON."))
        request = SpecRequest(method.lower(), path, query_pairs, headers, body or None, MEDIA_TYPE)
        if self.validate:
            problem = spec_problem(operation.spec, request)
            if problem is not None:
                self._violation(f"{method} {path}: {problem.text}")
                return _error(invalid(problem.detail, problem.pointer, problem.parameter))
        fault = self._next_fault(method, path, operation.template)
        if fault is not None and not fault.after:
            return _fault_answer(fault)
        base = self.base_url if self._served.running else SPEC_HOST
        call = Call(method, path, params, dict(query_pairs), payload, base, operation)
        answer = self._dispatch(call)
        if fault is not None:
            return _fault_answer(fault)
        if self.validate and self._check_response(method, operation.template):
            status, head, data = answer
            response = SpecResponse(status, data or None, head.get("Content-Type", ""), head)
            problem = spec_problem(operation.spec, request, response)
            if problem is not None:
                self._violation(f"response to {method} {path}: {problem.text}")
        return answer

    def _dispatch(self, call: Call) -> Answer:
        handler = _HANDLERS.get((call.method, call.operation.template))
        if handler is None:
            self._violation(f"{call.method} {call.operation.template}: not implemented by the fake")
            return _error(ApiError(404, "not_found", "Not found.", "not implemented by the fake"))
        try:
            with self._lock:
                status, result = handler(self, call)
        except ApiError as exc:
            return _error(exc)
        except FilterError as exc:
            self._violation(f"{call.method} {call.path}: filter refused: {exc}")
            return _error(invalid(str(exc), None, "filter"))
        if result is None:
            return status, {}, b""
        return status, {"Content-Type": MEDIA_TYPE}, json.dumps(result).encode()

    def _authorise(self, headers: dict[str, str], operation: Operation) -> None:
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme != "Klaviyo-API-Key" or not key:
            raise ApiError(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                pointer=None,
            )
        if key.strip() != self.api_key:
            raise ApiError(
                401,
                "authentication_failed",
                "Incorrect authentication credentials.",
                "Incorrect authentication credentials.",
                pointer=None,
            )
        revision = headers.get("revision")
        if revision is None or not _REVISION.match(revision):
            self._violation(f"{operation.method} {operation.template}: revision {revision!r}")
            raise invalid(
                f"The revision header is required, as YYYY-MM-DD[.suffix]; got {revision!r}.",
                None,
                "revision",
            )
        missing = [s for s in operation.scopes if not self._has_scope(s)]
        if missing:
            raise ApiError(
                403,
                "permission_denied",
                "You do not have permission to perform this action.",
                f"This API key is missing required scopes: {', '.join(missing)}.",
                pointer=None,
            )

    def _has_scope(self, scope: str) -> bool:
        resource, _, level = scope.partition(":")
        return scope in self.scopes or (level == "read" and f"{resource}:write" in self.scopes)

    def _admit(self, operation: Operation) -> dict[str, str]:
        """Counts the request in its fixed windows; 429 when one is full."""
        key = (operation.method, operation.template)
        with self._lock:
            limits = self.limits.get(key, {})
            if not self.rate_limits_enabled or not limits:
                return {}
            moment = self.clock()
            states = []
            for kind, size in (("burst", 1.0), ("steady", 60.0), ("daily", 86_400.0)):
                limit = limits.get(kind)
                if limit is None:
                    continue
                window = self._windows.setdefault((*key, kind), RateWindow())
                index = math.floor(moment / size)
                if window.index != index:
                    window.index, window.count = index, 0
                reset = max(0, math.ceil((index + 1) * size - moment))
                if window.count >= limit:
                    self.rate_limited += 1
                    unit = {"burst": "second", "steady": "minute", "daily": "day"}[kind]
                    raise ApiError(
                        429,
                        "throttled",
                        "Request was throttled.",
                        f"Request was throttled ({limit} per {unit}). "
                        f"Expected available in {max(reset, 1)} seconds.",
                        headers={"Retry-After": str(max(reset, 1))},
                    )
                states.append((kind, size, limit, window, reset))
            for *_, window, _ in states:
                window.count += 1
            # as Klaviyo documents: the state of the steady window, or of the day's when
            # that is tighter (the burst's alone when an endpoint has neither), with
            # every policy listed after its size
            longer = [s for s in states if s[0] != "burst"] or states
            shown = min(longer, key=lambda s: s[2] - s[3].count)
            policies = ", ".join(f"{limit};w={int(size)}" for _, size, limit, _, _ in states)
            return {
                "RateLimit-Limit": f"{shown[2]}, {policies}",
                "RateLimit-Remaining": str(shown[2] - shown[3].count),
                "RateLimit-Reset": str(shown[4]),
            }

    def _check_size(self, operation: Operation, body: bytes) -> None:
        limit, text = {
            "bulk_import_profiles": (MAX_IMPORT_BYTES, "5MB"),
            "bulk_create_events": (MAX_EVENT_BYTES, "5MB"),
            "create_or_update_profile": (MAX_PROFILE_BYTES, "100KB"),
            "create_profile": (MAX_PROFILE_BYTES, "100KB"),
            "update_profile": (MAX_PROFILE_BYTES, "100KB"),
        }.get(operation.operation_id, (None, ""))
        if limit is not None and len(body) > limit:
            raise ApiError(
                413,
                "payload_too_large",
                "Request entity too large.",
                f"The maximum allowed payload size is {text}; this one has {len(body)} bytes.",
            )

    def _check_response(self, method: str, template: str) -> bool:
        with self._lock:
            self._responses_checked[(method, template)] += 1
            return self._responses_checked[(method, template)] <= self.validate_responses

    def _next_fault(self, method: str, path: str, template: str) -> Fault | None:
        with self._lock:
            fault = self.faults.take(method, path, template)
            if fault is not None:
                return fault
            if self.storm_rate and self._storm_rng.random() < self.storm_rate:
                status = self._storm_rng.choice(self.storm_statuses)
                after = status != 429 and self._storm_rng.random() < 0.5
                return Fault(status, after=after)
            return None

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    # -- model -------------------------------------------------------------------------

    def _ulid(self) -> str:
        """A Klaviyo-style id: 26 Crockford base-32 characters, ordered by creation."""
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._ulid_ms:
                self._ulid_seq += 1
            else:
                self._ulid_ms, self._ulid_seq = ms, self._rng.getrandbits(79)
            value = (self._ulid_ms << 80) | self._ulid_seq
        return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))

    def _list_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            candidate = "".join(self._rng.choice(alphabet) for _ in range(6))
            if candidate not in self.lists:
                return candidate

    def _require(self, email: str) -> Profile:
        found = self.profile(email)
        if found is None:
            raise KeyError(f"no profile has the email {email}")
        return found

    def _reindex(self, profile: Profile, before: dict[str, str | None]) -> None:
        """Moves the profile's identifiers in the indexes (``before``: their old values)."""
        for name, index in (
            ("email", self._by_email),
            ("phone_number", self._by_phone),
            ("external_id", self._by_external),
        ):
            old, new = before[name], getattr(profile, name)
            if old == new:
                continue
            if old:
                index.pop(_key(old) if name == "email" else old, None)
            if new:
                index[_key(new) if name == "email" else new] = profile.id

    def _lookup(self, name: str, value: str | None) -> Profile | None:
        if not value:
            return None
        index = {"email": self._by_email, "phone_number": self._by_phone}.get(
            name, self._by_external
        )
        found = index.get(_key(value) if name == "email" else value)
        return self.profiles.get(found) if found else None

    def upsert(
        self, resource: dict[str, Any], pointer: str = "/data", *, create_only: bool = False
    ) -> tuple[Profile, bool]:
        """Creates or updates a profile from a JSON:API profile object; (profile, created?)."""
        attrs = resource.get("attributes") or {}
        _check_identifiers(attrs, pointer)
        target: Profile | None = None
        if resource.get("id"):
            target = self.profiles.get(resource["id"])
            if target is None:
                raise not_found("profile", resource["id"])
        matched = [self._lookup(name, attrs.get(name)) for name in IDENTIFIERS]
        found = [p for p in matched if p is not None]
        primary = target or (found[0] if found else None)
        others = [p for p in found if p is not primary]
        if others or (create_only and primary is not None):
            duplicate = others[0] if others else primary
            assert duplicate is not None
            raise ApiError(
                409,
                "duplicate_profile",
                "Conflict.",
                "A profile already exists with one of these identifiers.",
                pointer=f"{pointer}/attributes",
                meta={"duplicate_profile_id": duplicate.id},
            )
        if primary is None and not any(attrs.get(name) for name in IDENTIFIERS):
            raise invalid(
                "One of the identifiers email, phone_number or external_id is required.",
                f"{pointer}/attributes",
            )
        created = primary is None
        moment = now()
        if primary is None:
            primary = Profile(self._ulid(), moment, moment)
            self.profiles[primary.id] = primary
        before = {name: getattr(primary, name) for name in IDENTIFIERS}
        for name in PROFILE_FIELDS:
            if name in attrs:
                setattr(primary, name, attrs[name])
        location = attrs.get("location", {})
        if location is None:
            primary.location = {}
        for name, value in (location or {}).items():
            if value is None:
                primary.location.pop(name, None)
            else:
                primary.location[name] = value
        if "properties" in attrs:
            if attrs["properties"] is None:  # "setting a field to null will clear it out"
                primary.properties = {}
            for name, value in (attrs["properties"] or {}).items():
                if value is None:
                    primary.properties.pop(name, None)
                else:
                    primary.properties[name] = value
        _patch_properties(primary.properties, (resource.get("meta") or {}).get("patch_properties"))
        primary.updated = moment
        self._reindex(primary, before)
        return primary, created

    def record_event(self, profile: Profile, attrs: dict[str, Any]) -> FakeEvent | None:
        """Records one event of a profile; None when its unique id is already recorded."""
        metric = attrs["metric"]["data"]["attributes"]["name"]
        moment = _instant(attrs["time"]) if attrs.get("time") else now()
        moment = moment.astimezone(UTC).replace(microsecond=0)  # truncated to the second
        unique = attrs.get("unique_id") or moment.isoformat()  # Klaviyo's default: the time
        key = (profile.id, metric, unique)
        if key in self._event_keys:
            self.duplicate_events += 1
            return None
        self._event_keys.add(key)
        value = attrs.get("value")
        found = FakeEvent(
            id=self._ulid(),
            metric=metric,
            profile_id=profile.id,
            time=moment,
            unique_id=unique,
            properties=copy.deepcopy(attrs.get("properties") or {}),
            value=None if value is None else float(value),
            value_currency=attrs.get("value_currency"),
            backfill=bool(attrs.get("backfill")),
        )
        self.events.setdefault(metric, []).append(found)
        return found

    def _complete(self, job: ImportJob) -> None:
        """Processes a bulk import job: each profile is upserted or becomes an import error."""
        moment = now()
        job.started_at = job.started_at or moment
        for index, entry in enumerate(job.entries):
            pointer = f"/data/attributes/profiles/data/{index}"
            try:
                profile, _ = self.upsert(entry, pointer)
            except ApiError as exc:
                job.errors.append(
                    {
                        "type": "import-error",
                        "id": self._ulid(),
                        "attributes": {
                            "code": exc.code,
                            "title": exc.title,
                            "detail": exc.detail,
                            "source": {"pointer": exc.pointer or pointer},
                            "original_payload": copy.deepcopy(entry.get("attributes") or {}),
                        },
                    }
                )
                continue
            job.profile_ids.append(profile.id)
            for list_id in job.list_ids:
                if list_id in self.lists:
                    self.lists[list_id].members.setdefault(profile.id, moment)
        job.status, job.completed_at = "complete", now()

    def _advance(self, job: ImportJob | SuppressionJob) -> None:
        """One GET of the job: queued -> processing -> complete."""
        if job.status == "complete":
            return
        job.polls += 1
        elapsed = self.clock() - job.created_clock
        polls, seconds = self.job_polls_until_complete, self.job_seconds_until_complete
        if (polls is not None and job.polls >= polls) or (
            seconds is not None and elapsed >= seconds
        ):
            if isinstance(job, ImportJob):
                self._complete(job)
            else:
                self._suppress_all(job)
        else:
            job.status, job.started_at = "processing", job.started_at or now()

    def _suppress_all(self, job: SuppressionJob) -> None:
        """Processes a suppression job: each address is suppressed (its profile made when
        missing), or skipped when it already is."""
        moment = now()
        job.started_at = job.started_at or moment
        for email in job.emails:
            profile = self._lookup("email", email)
            if profile is None:
                profile, _ = self.upsert({"attributes": {"email": email}})
            state = profile.email_marketing
            if any(s["reason"] == "USER_SUPPRESSED" for s in state.suppression):
                job.skipped_count += 1
                continue
            state.suppression.append({"reason": "USER_SUPPRESSED", "timestamp": moment})
            self.suppressions_changed += 1
            state.consent, state.last_updated = "UNSUBSCRIBED", moment
            profile.opted_out.add("email")
            profile.updated = max(profile.updated, moment)
            job.completed_count += 1
        job.status, job.completed_at = "complete", now()

    def _subscribe_channel(
        self,
        profile: Profile,
        channel: str,
        moment: datetime,
        consented_at: datetime | None,
        custom_source: str | None,
        list_id: str | None,
    ) -> None:
        state = profile.channel(channel)
        if channel in profile.opted_out:
            self.resubscriptions.append(
                f"{profile.label} was subscribed to {channel} again after unsubscribing or "
                "being suppressed"
            )
        state.consent = "SUBSCRIBED"
        state.consent_timestamp = consented_at or moment
        state.last_updated = moment
        state.method, state.method_detail = "API", "API"
        state.custom_method_detail = custom_source
        if channel == "email":
            state.suppression = [
                s for s in state.suppression if s["reason"] not in LIFTED_BY_SUBSCRIBE
            ]
            self.suppressions_changed += 1
            if list_id is not None:
                state.list_suppressions = [
                    s for s in state.list_suppressions if s["list_id"] != list_id
                ]
        if list_id is not None and list_id in self.lists:
            self.lists[list_id].members.setdefault(profile.id, moment)
        profile.updated = moment

    def _unsubscribe_email(self, profile: Profile, moment: datetime, list_id: str | None) -> None:
        state = profile.email_marketing
        if (
            list_id is not None
            and list_id in self.lists
            and profile.id in self.lists[list_id].members
        ):
            state.list_suppressions.append(
                {"list_id": list_id, "reason": "UNSUBSCRIBE", "timestamp": moment}
            )
        else:
            state.consent = "UNSUBSCRIBED"
            if not any(s["reason"] == "UNSUBSCRIBE" for s in state.suppression):
                state.suppression.append({"reason": "UNSUBSCRIBE", "timestamp": moment})
                self.suppressions_changed += 1
        state.last_updated = moment
        profile.opted_out.add("email")
        profile.updated = max(profile.updated, moment)

    # -- rendering ---------------------------------------------------------------------

    def render_profile(self, profile: Profile, call: Call, **extra: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {name: getattr(profile, name) for name in PROFILE_FIELDS}
        attributes.update(
            created=stamp(profile.created),
            updated=stamp(profile.updated),
            last_event_date=None,
            location={name: profile.location.get(name) for name in LOCATION_FIELDS},
            properties=dict(profile.properties),
        )
        if "subscriptions" in call.values("additional-fields[profile]"):
            attributes["subscriptions"] = _subscriptions(profile)
        attributes.update(extra)
        attributes = _sparse(attributes, call.values("fields[profile]"))
        self_link = f"{call.base}/api/profiles/{profile.id}"
        return {
            "type": "profile",
            "id": profile.id,
            "attributes": attributes,
            "relationships": {
                name: {"links": _relationship_links(self_link, name)}
                for name in ("lists", "segments", "push-tokens")
            },
            "links": {"self": self_link},
        }

    def render_list(self, found: FakeList, call: Call, **extra: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "name": found.name,
            "created": stamp(found.created),
            "updated": stamp(found.updated),
            "opt_in_process": found.opt_in_process,
            **extra,
        }
        self_link = f"{call.base}/api/lists/{found.id}"
        return {
            "type": "list",
            "id": found.id,
            "attributes": _sparse(attributes, call.values("fields[list]")),
            "relationships": {
                name: {"links": _relationship_links(self_link, name)}
                for name in ("profiles", "tags", "flow-triggers")
            },
            "links": {"self": self_link},
        }

    def render_job(self, job: ImportJob, call: Call) -> dict[str, Any]:
        self_link = f"{call.base}/api/profile-bulk-import-jobs/{job.id}"
        attributes = {
            "status": job.status,
            "created_at": stamp(job.created_at),
            "total_count": len(job.entries),
            "completed_count": len(job.profile_ids),
            "failed_count": len(job.errors),
            "completed_at": stamp(job.completed_at),
            "expires_at": stamp(job.created_at + JOB_LIFETIME),
            "started_at": stamp(job.started_at),
        }
        return {
            "type": "profile-bulk-import-job",
            "id": job.id,
            "attributes": _sparse(attributes, call.values("fields[profile-bulk-import-job]")),
            "relationships": {
                "lists": {
                    "data": [{"type": "list", "id": lid} for lid in job.list_ids],
                    "links": _relationship_links(self_link, "lists"),
                },
                "profiles": {"links": _relationship_links(self_link, "profiles")},
                "import-errors": {"links": {"related": f"{self_link}/import-errors"}},
            },
            "links": {"self": self_link},
        }

    def render_suppression_job(self, job: SuppressionJob, call: Call) -> dict[str, Any]:
        attributes = {
            "status": job.status,
            "created_at": stamp(job.created_at),
            "total_count": len(job.emails),
            "completed_count": job.completed_count,
            "completed_at": stamp(job.completed_at),
            "skipped_count": job.skipped_count,
        }
        lists = [{"type": "list", "id": job.list_id}] if job.list_id else []
        return {
            "type": "profile-suppression-bulk-create-job",
            "id": job.id,
            "attributes": _sparse(
                attributes, call.values("fields[profile-suppression-bulk-create-job]")
            ),
            "relationships": {"lists": {"data": lists}, "segments": {"data": []}},
            "links": {"self": f"{call.base}/api/profile-suppression-bulk-create-jobs/{job.id}"},
        }

    def page(
        self,
        call: Call,
        items: list[Any],
        render: Callable[[Any], dict[str, Any]],
        default: int = 20,
    ) -> dict[str, Any]:
        """A cursor-paginated collection: ``page[size]``, ``page[cursor]``, ``links.next``."""
        size = int(call.query.get("page[size]") or default)
        cursor = call.query.get("page[cursor]")
        offset = _read_cursor(cursor) if cursor else 0
        chunk = items[offset : offset + size]
        links = {"self": call.url()}
        if offset + size < len(items):
            links["next"] = call.url({**call.query, "page[cursor]": _cursor(offset + size)})
        if offset > 0:
            links["prev"] = call.url({**call.query, "page[cursor]": _cursor(max(0, offset - size))})
        return {"data": [render(item) for item in chunk], "links": links}


def _check_identifiers(attrs: dict[str, Any], pointer: str) -> None:
    email, phone = attrs.get("email"), attrs.get("phone_number")
    if email is not None and not _EMAIL.match(email):
        raise invalid(f"Invalid email address: {email!r}.", f"{pointer}/attributes/email")
    if phone is not None and not _PHONE.match(phone):
        raise invalid(
            f"Invalid phone number format (Example of a valid format: +12345678901): {phone!r}.",
            f"{pointer}/attributes/phone_number",
        )


def _patch_properties(properties: dict[str, Any], patch: dict[str, Any] | None) -> None:
    if not patch:
        return
    unset = patch.get("unset") or []
    for name in [unset] if isinstance(unset, str) else unset:
        properties.pop(name, None)
    for name, value in (patch.get("append") or {}).items():
        current = properties.get(name)
        items = current if isinstance(current, list) else ([] if current is None else [current])
        properties[name] = items + (value if isinstance(value, list) else [value])
    for name, value in (patch.get("unappend") or {}).items():
        if isinstance(properties.get(name), list):
            drop = value if isinstance(value, list) else [value]
            properties[name] = [v for v in properties[name] if v not in drop]


def _subscriptions(profile: Profile) -> dict[str, Any]:
    email, sms = profile.email_marketing, profile.sms_marketing
    return {
        "email": {
            "marketing": {
                "can_receive_email_marketing": email.consent == "SUBSCRIBED"
                and not email.suppression,
                "consent": email.consent,
                "consent_timestamp": stamp(email.consent_timestamp),
                "last_updated": stamp(email.last_updated),
                "method": email.method,
                "method_detail": email.method_detail or "",
                "custom_method_detail": email.custom_method_detail,
                "double_optin": email.double_optin,
                "suppression": [
                    {"reason": s["reason"], "timestamp": stamp(s["timestamp"])}
                    for s in email.suppression
                ],
                "list_suppressions": [
                    {**s, "timestamp": stamp(s["timestamp"])} for s in email.list_suppressions
                ],
            }
        },
        "sms": {
            "marketing": {
                "can_receive_sms_marketing": sms.consent == "SUBSCRIBED",
                "consent": sms.consent,
                "consent_timestamp": stamp(sms.consent_timestamp),
                "method": sms.method,
                "method_detail": sms.method_detail or "",
                "last_updated": stamp(sms.last_updated),
            }
        },
    }


def _sparse(attributes: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """JSON:API sparse fieldsets, dotted names reaching into nested objects."""
    if not wanted:
        return attributes
    out: dict[str, Any] = {}
    nested: dict[str, list[str]] = {}
    for name in wanted:
        head, _, tail = name.partition(".")
        if head not in attributes:
            continue
        if tail and isinstance(attributes[head], dict):
            nested.setdefault(head, []).append(tail)
        else:
            out[head] = attributes[head]
    for head, tails in nested.items():
        if head not in out:
            out[head] = _sparse(attributes[head], tails)
    return out


def _relationship_links(self_link: str, name: str) -> dict[str, str]:
    return {"self": f"{self_link}/relationships/{name}", "related": f"{self_link}/{name}"}


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset::{offset}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, offset = text.partition("::")
        if prefix != "offset" or not offset.isdigit():
            raise ValueError(text)
    except ValueError:
        raise invalid("The page cursor is invalid.", None, "page[cursor]") from None
    return int(offset)


def _error(exc: ApiError) -> Answer:
    headers = {"Content-Type": MEDIA_TYPE, **exc.headers}
    return exc.status, headers, json.dumps(exc.document()).encode()


def _fault_answer(fault: Fault) -> Answer | None:
    if fault.status == DROP:
        return None
    status = int(fault.status)
    if status == 429:
        exc = ApiError(
            429,
            "throttled",
            "Request was throttled.",
            "injected by the test",
            headers={"Retry-After": fault.retry_after} if fault.retry_after is not None else None,
        )
    else:
        exc = ApiError(status, "error", "A server error occurred.", "injected by the test")
    return _error(exc)


# -- routes -------------------------------------------------------------------------------------

Handler = Callable[[FakeKlaviyo, Call], tuple[int, Any]]
_HANDLERS: dict[tuple[str, str], Handler] = {}


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[(method, template)] = func
        return func

    return register


def _filtered(call: Call, items: list[Any], values: Callable[[Any, str], list[Any]]) -> list[Any]:
    text = call.query.get("filter")
    if not text:
        return items
    tree = parse_filter(text, call.operation.filters)
    return [item for item in items if matches(tree, partial(values, item))]


def _sorted(call: Call, items: list[Any], keys: dict[str, Callable[[Any], Any]]) -> list[Any]:
    wanted = call.query.get("sort")
    if not wanted:
        return items
    name = wanted.lstrip("-")
    if name not in keys:
        raise invalid(f"'{wanted}' is not a valid sort for this endpoint.", None, "sort")
    low = datetime.min.replace(tzinfo=UTC)
    return sorted(
        items,
        key=lambda item: (keys[name](item) is not None, keys[name](item) or low),
        reverse=wanted.startswith("-"),
    )


def _profile_candidates(fake: FakeKlaviyo, call: Call) -> list[Profile]:
    """The profiles a filter can match, by id: those its identifiers name when it is one
    ``equals`` or ``any`` on an id, e-mail or phone (from the indexes, as Klaviyo's own
    lookups are), else every profile. ``_filtered`` still applies the whole filter."""
    text = call.query.get("filter")
    tree = parse_filter(text, call.operation.filters) if text else None
    parts = tree.parts if tree is not None else []
    times = [p for p in parts if isinstance(p, Condition) and _on_suppression_time(p)]
    if times and len(times) == len(parts):
        return fake.suppressed_between(times)
    condition = tree.parts[0] if tree is not None and len(tree.parts) == 1 else None
    if not isinstance(condition, Condition) or condition.operator not in ("equals", "any"):
        return sorted(fake.profiles.values(), key=lambda p: p.id)
    wanted = condition.value if isinstance(condition.value, list) else [condition.value]
    if condition.field == "id":
        found = [fake.profiles.get(v) if isinstance(v, str) else None for v in wanted]
    elif condition.field in ("email", "phone_number"):
        found = [fake._lookup(condition.field, v) if isinstance(v, str) else None for v in wanted]
    else:
        return sorted(fake.profiles.values(), key=lambda p: p.id)
    return sorted({p.id: p for p in found if p is not None}.values(), key=lambda p: p.id)


def _on_suppression_time(part: Condition) -> bool:
    return (
        part.field == SUPPRESSION_TIME
        and part.operator in _COMPARISONS
        and isinstance(part.value, datetime)
    )


def _profile_values(profile: Profile, name: str) -> list[Any]:
    email = profile.email_marketing
    if name.startswith("subscriptions.email.marketing.suppression."):
        return [s[name.rsplit(".", 1)[1]] for s in email.suppression]
    if name.startswith("subscriptions.email.marketing.list_suppressions."):
        return [s[name.rsplit(".", 1)[1]] for s in email.list_suppressions]
    value = (
        getattr(profile, name, None)
        if name in (*PROFILE_FIELDS, "id", "created", "updated")
        else None
    )
    return [] if value is None else [value]


def _latest(entries: list[dict[str, Any]]) -> datetime | None:
    return max((s["timestamp"] for s in entries), default=None)


_PROFILE_SORTS: dict[str, Callable[[Profile], Any]] = {
    "id": lambda p: p.id,
    "created": lambda p: p.created,
    "updated": lambda p: p.updated,
    "email": lambda p: p.email,
    "subscriptions.email.marketing.suppression.timestamp": lambda p: _latest(
        p.email_marketing.suppression
    ),
    "subscriptions.email.marketing.list_suppressions.timestamp": lambda p: _latest(
        p.email_marketing.list_suppressions
    ),
}


def _body_data(call: Call) -> Any:
    return (call.body or {}).get("data")


def _one_list(fake: FakeKlaviyo, call: Call) -> FakeList:
    found = fake.lists.get(call.params["id"])
    if found is None:
        raise not_found("list", call.params["id"])
    return found


def _one_profile(fake: FakeKlaviyo, ident: str) -> Profile:
    found = fake.profiles.get(ident)
    if found is None:
        raise not_found("profile", ident)
    return found


def _one_job(fake: FakeKlaviyo, ident: str) -> ImportJob:
    found = fake.jobs.get(ident)
    if found is None:
        raise not_found("profile-bulk-import-job", ident)
    return found


def _list_refs(fake: FakeKlaviyo, refs: list[dict[str, Any]], pointer: str) -> list[str]:
    ids = [ref["id"] for ref in refs]
    for ident in ids:
        if ident not in fake.lists:
            raise ApiError(
                404,
                "not_found",
                "Not found.",
                f"A list with id {ident} does not exist.",
                pointer=pointer,
            )
    return ids


# profiles


@route("GET", "/api/profiles")
def _get_profiles(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    # The profiles a filter matches are found for its first page; the pages its cursor
    # leads to take them from there (as of that first page, their contents as they are
    # now) instead of scanning every profile again for each page.
    read = (call.query.get("filter"), call.query.get("sort"))
    found = fake.matched.get(read) if call.query.get("page[cursor]") else None
    if found is None:
        found = _filtered(call, _profile_candidates(fake, call), _profile_values)
        found = _sorted(call, found, _PROFILE_SORTS)
        if len(found) > int(call.query.get("page[size]") or 20):
            if len(fake.matched) >= 64:
                fake.matched.clear()
            fake.matched[read] = found
    return 200, fake.page(call, found, lambda p: fake.render_profile(p, call))


@route("POST", "/api/profiles")
def _create_profile(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    profile, _ = fake.upsert(_body_data(call), create_only=True)
    return 201, {"data": fake.render_profile(profile, call)}


@route("GET", "/api/profiles/{id}")
def _get_profile(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    profile = _one_profile(fake, call.params["id"])
    document: dict[str, Any] = {"data": fake.render_profile(profile, call)}
    if "lists" in call.values("include"):
        memberships = [x for x in fake.lists.values() if profile.id in x.members]
        document["data"]["relationships"]["lists"]["data"] = [
            {"type": "list", "id": x.id} for x in memberships
        ]
        document["included"] = [fake.render_list(x, call) for x in memberships]
    return 200, document


@route("PATCH", "/api/profiles/{id}")
def _update_profile(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    data = _body_data(call)
    if data.get("id") != call.params["id"]:
        raise ApiError(409, "conflict", "Conflict.", "The id in the body must match the URL.")
    profile, _ = fake.upsert(data)
    return 200, {"data": fake.render_profile(profile, call)}


@route("POST", "/api/profile-import")
def _profile_import(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    profile, created = fake.upsert(_body_data(call))
    return (201 if created else 200), {"data": fake.render_profile(profile, call)}


@route("GET", "/api/profiles/{id}/lists")
def _lists_of_profile(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    profile = _one_profile(fake, call.params["id"])
    found = [x for x in fake.lists.values() if profile.id in x.members]
    return 200, {"data": [fake.render_list(x, call) for x in found], "links": {"self": call.url()}}


@route("GET", "/api/profiles/{id}/relationships/lists")
def _list_ids_of_profile(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    profile = _one_profile(fake, call.params["id"])
    found = [{"type": "list", "id": x.id} for x in fake.lists.values() if profile.id in x.members]
    return 200, {"data": found, "links": {"self": call.url()}}


# bulk import jobs


@route("POST", "/api/profile-bulk-import-jobs")
def _bulk_import(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    data = _body_data(call)
    entries = data["attributes"]["profiles"]["data"]
    if len(entries) > MAX_IMPORT_PROFILES:
        raise invalid(
            f"A bulk import job accepts up to {MAX_IMPORT_PROFILES:,} profiles; "
            f"this one has {len(entries):,}.",
            "/data/attributes/profiles/data",
        )
    for index, entry in enumerate(entries):
        size = len(json.dumps(entry).encode())
        if size > MAX_PROFILE_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                "Request entity too large.",
                f"The maximum allowed payload size per profile is 100KB; profile {index} has "
                f"{size} bytes.",
                pointer=f"/data/attributes/profiles/data/{index}",
            )
    refs = ((data.get("relationships") or {}).get("lists") or {}).get("data") or []
    list_ids = _list_refs(fake, refs, "/data/relationships/lists")
    job_id = fake.job_id_prefix + fake._ulid()
    job = ImportJob(job_id, now(), fake.clock(), copy.deepcopy(entries), list_ids)
    fake.jobs[job.id] = job
    return 202, {"data": fake.render_job(job, call), "links": {"self": call.url({})}}


@route("GET", "/api/profile-bulk-import-jobs")
def _bulk_jobs(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _filtered(call, list(fake.jobs.values()), lambda j, _: [j.status])
    found = _sorted(call, found, {"created_at": lambda j: j.created_at})
    return 200, fake.page(call, found, lambda j: fake.render_job(j, call))


@route("GET", "/api/profile-bulk-import-jobs/{job_id}")
def _bulk_job(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["job_id"])
    fake._advance(job)
    document: dict[str, Any] = {"data": fake.render_job(job, call), "links": {"self": call.url({})}}
    if "lists" in call.values("include"):
        document["included"] = [
            fake.render_list(fake.lists[lid], call) for lid in job.list_ids if lid in fake.lists
        ]
    return 200, document


@route("GET", "/api/profile-bulk-import-jobs/{id}/import-errors")
def _bulk_job_errors(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["id"])
    return 200, fake.page(call, job.errors, lambda e: e)


@route("GET", "/api/profile-bulk-import-jobs/{id}/profiles")
def _bulk_job_profiles(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["id"])
    found = [fake.profiles[pid] for pid in job.profile_ids if pid in fake.profiles]
    return 200, fake.page(call, found, lambda p: fake.render_profile(p, call))


@route("GET", "/api/profile-bulk-import-jobs/{id}/relationships/profiles")
def _bulk_job_profile_ids(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["id"])
    return 200, fake.page(call, job.profile_ids, lambda pid: {"type": "profile", "id": pid})


@route("GET", "/api/profile-bulk-import-jobs/{id}/lists")
def _bulk_job_lists(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["id"])
    found = [fake.lists[lid] for lid in job.list_ids if lid in fake.lists]
    return 200, {"data": [fake.render_list(x, call) for x in found], "links": {"self": call.url()}}


@route("GET", "/api/profile-bulk-import-jobs/{id}/relationships/lists")
def _bulk_job_list_ids(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = _one_job(fake, call.params["id"])
    data = [{"type": "list", "id": lid} for lid in job.list_ids]
    return 200, {"data": data, "links": {"self": call.url()}}


# subscriptions


def _subscription_targets(
    fake: FakeKlaviyo, entries: list[dict[str, Any]], *, historical: bool, subscribe: bool
) -> list[tuple[dict[str, Any], dict[str, datetime | None]]]:
    """Checks a whole subscription job up front (Klaviyo refuses it with 400 as a whole);
    returns each entry with the channels it changes and their consent times."""
    checked = []
    moment = now()
    for index, entry in enumerate(entries):
        resource = f"/data/attributes/profiles/data/{index}"
        pointer = f"{resource}/attributes"
        attrs = entry.get("attributes") or {}
        _check_identifiers(attrs, resource)
        channels: dict[str, datetime | None] = {}
        for channel in ("email", "sms", "whatsapp", "push"):
            marketing = ((attrs.get("subscriptions") or {}).get(channel) or {}).get("marketing")
            if not marketing:
                continue
            if channel in ("whatsapp", "push"):
                fake._violation(f"the fake does not model {channel} subscriptions")
                continue
            at = marketing.get("consented_at")
            where = f"{pointer}/subscriptions/{channel}/marketing/consented_at"
            if at is not None and not historical:
                raise invalid("consented_at is only allowed with historical_import.", where)
            if subscribe and historical and at is None:
                raise invalid("consented_at is required when historical_import is true.", where)
            if at is not None and _instant(at) > moment:
                raise invalid("consented_at must be in the past.", where)
            channels[channel] = _instant(at) if at is not None else None
        if "email" in channels and not (attrs.get("email") or entry.get("id")):
            raise invalid("An email subscription needs an email address.", f"{pointer}/email")
        if "sms" in channels and not (attrs.get("phone_number") or entry.get("id")):
            raise invalid("An SMS subscription needs a phone number.", f"{pointer}/phone_number")
        if entry.get("id") and entry["id"] not in fake.profiles:
            raise not_found("profile", entry["id"])
        checked.append((entry, channels))
    return checked


def _find_or_create(fake: FakeKlaviyo, entry: dict[str, Any]) -> Profile:
    attrs = entry.get("attributes") or {}
    if entry.get("id"):
        return fake.profiles[entry["id"]]
    for name in ("email", "phone_number"):
        found = fake._lookup(name, attrs.get(name))
        if found is not None:
            for other in ("email", "phone_number"):  # fill in what the profile lacks
                value = attrs.get(other)
                if value and not getattr(found, other) and fake._lookup(other, value) is None:
                    before = {n: getattr(found, n) for n in IDENTIFIERS}
                    setattr(found, other, value)
                    fake._reindex(found, before)
            return found
    resource = {"attributes": {k: attrs[k] for k in ("email", "phone_number") if attrs.get(k)}}
    profile, _ = fake.upsert(resource)
    return profile


def _job_list(fake: FakeKlaviyo, data: dict[str, Any]) -> FakeList | None:
    ref = (((data.get("relationships") or {}).get("list") or {}).get("data")) or None
    if ref is None:
        return None
    _list_refs(fake, [ref], "/data/relationships/list")
    return fake.lists[ref["id"]]


@route("POST", "/api/profile-subscription-bulk-create-jobs")
def _subscribe(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    data = _body_data(call)
    attrs = data["attributes"]
    entries = attrs["profiles"]["data"]
    if len(entries) > MAX_SUBSCRIBE:
        raise invalid(
            f"At most {MAX_SUBSCRIBE} profiles can be subscribed per call; got {len(entries)}.",
            "/data/attributes/profiles/data",
        )
    historical = bool(attrs.get("historical_import"))
    target = _job_list(fake, data)
    checked = _subscription_targets(fake, entries, historical=historical, subscribe=True)
    custom_source = attrs.get("custom_source")

    def apply() -> None:
        moment = now()
        for entry, channels in checked:
            profile = _find_or_create(fake, entry)
            for channel, consented_at in channels.items():
                list_id = target.id if target is not None else None
                if (
                    channel == "email"
                    and target is not None
                    and target.opt_in_process == "double_opt_in"
                    and not historical
                ):
                    if profile.email:  # Klaviyo sends a confirmation; nothing changes yet
                        fake.confirmations_sent[_key(profile.email)] = target.id
                    continue
                fake._subscribe_channel(
                    profile, channel, moment, consented_at, custom_source, list_id
                )
            if not channels and target is not None:
                target.members.setdefault(profile.id, moment)

    if fake.defer_subscription_jobs:
        fake.pending_subscriptions.append(apply)
    else:
        apply()
    return 202, None


@route("POST", "/api/profile-subscription-bulk-delete-jobs")
def _unsubscribe(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    data = _body_data(call)
    entries = data["attributes"]["profiles"]["data"]
    if len(entries) > MAX_UNSUBSCRIBE:
        raise invalid(
            f"At most {MAX_UNSUBSCRIBE} profiles can be unsubscribed per call; got {len(entries)}.",
            "/data/attributes/profiles/data",
        )
    target = _job_list(fake, data)
    checked = _subscription_targets(fake, entries, historical=False, subscribe=False)

    def apply() -> None:
        moment = now()
        for entry, channels in checked:
            profile = _find_or_create(fake, entry)
            if "email" in channels:
                fake._unsubscribe_email(profile, moment, target.id if target else None)
            if "sms" in channels:
                state = profile.sms_marketing
                state.consent, state.last_updated = "UNSUBSCRIBED", moment
                profile.opted_out.add("sms")
                profile.updated = moment

    if fake.defer_subscription_jobs:
        fake.pending_subscriptions.append(apply)
    else:
        apply()
    return 202, None


# suppressions


@route("POST", "/api/profile-suppression-bulk-create-jobs")
def _suppress_profiles(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    data = _body_data(call)
    profiles = data["attributes"].get("profiles")
    relationships = data.get("relationships") or {}
    list_ref = (relationships.get("list") or {}).get("data")
    segment_ref = (relationships.get("segment") or {}).get("data")
    given = [part for part in (profiles, list_ref, segment_ref) if part is not None]
    if len(given) != 1:
        raise invalid("Give profiles, a list or a segment to suppress, and only one of them.")
    if segment_ref is not None:
        fake._violation("the fake does not model segments")
        raise not_found("segment", segment_ref["id"])
    if list_ref is not None:
        [list_id] = _list_refs(fake, [list_ref], "/data/relationships/list")
        members = [fake.profiles[pid] for pid in fake.lists[list_id].members]
        emails = [p.email for p in members if p.email]
    else:
        list_id = None
        entries = profiles["data"]
        if not entries or len(entries) > MAX_SUPPRESS:
            raise invalid(
                f"Between 1 and {MAX_SUPPRESS} email addresses can be suppressed per call; "
                f"got {len(entries)}.",
                "/data/attributes/profiles/data",
            )
        emails = []
        for index, entry in enumerate(entries):
            email = entry["attributes"]["email"]
            if not _EMAIL.match(email):
                raise invalid(
                    f"Invalid email address: {email!r}.",
                    f"/data/attributes/profiles/data/{index}/attributes/email",
                )
            emails.append(email)
    job = SuppressionJob(fake._ulid(), now(), fake.clock(), emails, list_id)
    fake.suppression_jobs[job.id] = job
    return 202, {"data": fake.render_suppression_job(job, call), "links": {"self": call.url({})}}


def _suppression_values(job: SuppressionJob, name: str) -> list[Any]:
    return {"status": [job.status], "list_id": [job.list_id] if job.list_id else []}.get(name, [])


@route("GET", "/api/profile-suppression-bulk-create-jobs")
def _suppression_jobs(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _filtered(call, list(fake.suppression_jobs.values()), _suppression_values)
    found = _sorted(call, found, {"created": lambda j: j.created_at})
    return 200, fake.page(call, found, lambda j: fake.render_suppression_job(j, call))


@route("GET", "/api/profile-suppression-bulk-create-jobs/{job_id}")
def _suppression_job(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    job = fake.suppression_jobs.get(call.params["job_id"])
    if job is None:
        raise not_found("profile-suppression-bulk-create-job", call.params["job_id"])
    fake._advance(job)
    return 200, {"data": fake.render_suppression_job(job, call), "links": {"self": call.url({})}}


# lists


_LIST_SORTS: dict[str, Callable[[FakeList], Any]] = {
    "created": lambda x: x.created,
    "id": lambda x: x.id,
    "name": lambda x: x.name,
    "updated": lambda x: x.updated,
}


def _list_values(found: FakeList, name: str) -> list[Any]:
    return [getattr(found, name)] if name in ("id", "name", "created", "updated") else []


@route("GET", "/api/lists")
def _get_lists(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _filtered(call, sorted(fake.lists.values(), key=lambda x: x.created), _list_values)
    found = _sorted(call, found, _LIST_SORTS)
    return 200, fake.page(call, found, lambda x: fake.render_list(x, call), default=10)


@route("POST", "/api/lists")
def _create_list(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    attrs = _body_data(call)["attributes"]
    found = fake.add_list(attrs["name"], attrs.get("opt_in_process") or "single_opt_in")
    return 201, {"data": fake.render_list(found, call), "links": {"self": call.url({})}}


@route("GET", "/api/lists/{id}")
def _get_list(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _one_list(fake, call)
    extra = {}
    if "profile_count" in call.values("additional-fields[list]"):
        extra["profile_count"] = len(found.members)
    return 200, {"data": fake.render_list(found, call, **extra), "links": {"self": call.url({})}}


@route("PATCH", "/api/lists/{id}")
def _update_list(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _one_list(fake, call)
    data = _body_data(call)
    if data["id"] != found.id:
        raise ApiError(409, "conflict", "Conflict.", "The id in the body must match the URL.")
    for name in ("name", "opt_in_process"):
        if data["attributes"].get(name) is not None:
            setattr(found, name, data["attributes"][name])
    found.updated = now()
    return 200, {"data": fake.render_list(found, call), "links": {"self": call.url({})}}


@route("DELETE", "/api/lists/{id}")
def _delete_list(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    del fake.lists[_one_list(fake, call).id]
    return 204, None


def _member_ids(fake: FakeKlaviyo, call: Call) -> list[str]:
    refs = _body_data(call)
    if len(refs) > MAX_LIST_IDS:
        raise invalid(
            f"At most {MAX_LIST_IDS} profiles can be sent per call; got {len(refs)}.", "/data"
        )
    ids = [ref["id"] for ref in refs]
    unknown = [ident for ident in ids if ident not in fake.profiles]
    if unknown:  # nothing is applied: the call is refused as a whole
        raise invalid(f"Invalid profile ids: {', '.join(unknown[:10])}.", "/data")
    return ids


@route("POST", "/api/lists/{id}/relationships/profiles")
def _add_members(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _one_list(fake, call)
    moment = now()
    for ident in _member_ids(fake, call):
        found.members.setdefault(ident, moment)
    return 204, None


@route("DELETE", "/api/lists/{id}/relationships/profiles")
def _remove_members(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    found = _one_list(fake, call)
    for ident in _member_ids(fake, call):
        found.members.pop(ident, None)
    return 204, None


def _members_of(fake: FakeKlaviyo, call: Call) -> list[tuple[Profile, datetime]]:
    found = _one_list(fake, call)
    pairs = [(fake.profiles[pid], at) for pid, at in found.members.items() if pid in fake.profiles]

    def values(pair: tuple[Profile, datetime], name: str) -> list[Any]:
        return [pair[1]] if name == "joined_group_at" else _profile_values(pair[0], name)

    pairs = _filtered(call, pairs, values)
    return _sorted(call, pairs, {"joined_group_at": lambda pair: pair[1]})


@route("GET", "/api/lists/{id}/profiles")
def _list_profiles(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    pairs = _members_of(fake, call)
    return 200, fake.page(
        call, pairs, lambda pair: fake.render_profile(pair[0], call, joined_group_at=stamp(pair[1]))
    )


@route("GET", "/api/lists/{id}/relationships/profiles")
def _list_profile_ids(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    pairs = _members_of(fake, call)
    return 200, fake.page(call, pairs, lambda pair: {"type": "profile", "id": pair[0].id})


# -- events -----------------------------------------------------------------------------------

_BULK_EVENTS = "/data/attributes/events-bulk-create/data"


def _too_long(value: Any) -> bool:
    """Whether a string in the value exceeds Klaviyo's 100 KB per string."""
    if isinstance(value, str):
        return len(value.encode()) > MAX_EVENT_STRING
    if isinstance(value, dict):
        return any(_too_long(v) for v in value.values())
    if isinstance(value, list):
        return any(_too_long(v) for v in value)
    return False


def _entry_problems(fake: FakeKlaviyo, entry: dict[str, Any], pointer: str) -> list[ApiError]:
    """What Klaviyo would refuse in one entry of a bulk create events call."""
    problems: list[ApiError] = []
    attrs = entry["attributes"]
    profile = attrs["profile"]["data"]
    profile_attrs = profile.get("attributes") or {}
    at_profile = f"{pointer}/attributes/profile/data"
    try:
        _check_identifiers(profile_attrs, at_profile)
    except ApiError as exc:
        problems.append(exc)
    else:
        if profile.get("id") and profile["id"] not in fake.profiles:
            problems.append(invalid(f"Unknown profile id {profile['id']}.", f"{at_profile}/id"))
        matched = {
            p.id for name in IDENTIFIERS if (p := fake._lookup(name, profile_attrs.get(name)))
        }
        if len(matched) > 1:
            problems.append(
                invalid("The identifiers name more than one profile.", f"{at_profile}/attributes")
            )
        if not profile.get("id") and not any(profile_attrs.get(name) for name in IDENTIFIERS):
            problems.append(
                invalid(
                    "One of the identifiers email, phone_number or external_id is required.",
                    f"{at_profile}/attributes",
                )
            )
    latest = now() + timedelta(days=365)
    for index, event in enumerate(attrs["events"]["data"]):
        at = f"{pointer}/attributes/events/data/{index}/attributes"
        event_attrs = event["attributes"]
        name = event_attrs["metric"]["data"]["attributes"]["name"]
        if not name or len(name) > MAX_METRIC_NAME:
            problems.append(
                invalid("A metric name must be 1 to 127 characters.", f"{at}/metric/data")
            )
        moment = event_attrs.get("time")
        if moment is not None and not EARLIEST_EVENT < _instant(moment) <= latest:
            problems.append(
                invalid(
                    "The time must be after the year 1990 and at most 1 year in the future.",
                    f"{at}/time",
                )
            )
        if _too_long(event_attrs.get("properties")):
            problems.append(invalid("A string cannot be larger than 100KB.", f"{at}/properties"))
    return problems


def _identity(profile: dict[str, Any]) -> tuple[Any, ...]:
    attrs = profile.get("attributes") or {}
    email = attrs.get("email")
    return (profile.get("id"), _key(email) if email else None, attrs.get("phone_number"))


@route("POST", "/api/event-bulk-create-jobs")
def _bulk_create_events(fake: FakeKlaviyo, call: Call) -> tuple[int, Any]:
    """Validates the whole call first (Klaviyo processes none of it when any entry is
    wrong, and points at each wrong one), then records each event once per profile,
    metric and unique id (a unique id already recorded is dropped silently)."""
    entries = _body_data(call)["attributes"]["events-bulk-create"]["data"]
    total = sum(len(entry["attributes"]["events"]["data"]) for entry in entries)
    if total > MAX_EVENTS:
        raise invalid(f"At most {MAX_EVENTS} events can be sent per call; got {total}.", "/data")
    problems: list[ApiError] = []
    repeated: set[tuple[Any, ...]] = set()
    for index, entry in enumerate(entries):
        pointer = f"{_BULK_EVENTS}/{index}"
        problems.extend(_entry_problems(fake, entry, pointer))
        who = _identity(entry["attributes"]["profile"]["data"])
        for position, event in enumerate(entry["attributes"]["events"]["data"]):
            event_attrs = event["attributes"]
            unique = event_attrs.get("unique_id")
            if unique is None:
                continue
            key = (*who, event_attrs["metric"]["data"]["attributes"]["name"], unique)
            if key in repeated:
                problems.append(
                    invalid(
                        f"The unique_id {unique!r} is repeated for the same profile and metric.",
                        f"{pointer}/attributes/events/data/{position}/attributes/unique_id",
                    )
                )
            repeated.add(key)
    if problems:
        first, *others = problems
        first.others = others
        raise first
    for index, entry in enumerate(entries):
        attrs = entry["attributes"]
        profile, _ = fake.upsert(
            attrs["profile"]["data"], f"{_BULK_EVENTS}/{index}/attributes/profile/data"
        )
        for event in attrs["events"]["data"]:
            fake.record_event(profile, event["attributes"])
    return 202, None


# -- HTTP -------------------------------------------------------------------------------------


@pytest.fixture
def klaviyo_fake() -> Iterator[FakeKlaviyo]:
    """A running fake; on teardown, spec violations and consent problems fail the test."""
    fake = FakeKlaviyo().start()
    try:
        yield fake
    finally:
        fake.stop()
    problems = fake.violations + fake.consent_problems()
    assert not problems, "\n".join(problems[:20])
