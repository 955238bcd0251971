"""A fake HubSpot CRM API speaking real HTTP on 127.0.0.1, strict about what the docs say.

Written from HubSpot's public reference pages on developers.hubspot.com (no
machine-readable spec is copied): docs/api-reference/latest/crm/objects/contacts/batch/
upsert-contacts (and the contacts guide), docs/api/crm/properties (the properties guide
and create-property), docs/api-reference/error-handling, and the API usage details
(docs/guides/apps/api-usage/usage-details):

- CRM contacts, batch upsert (``POST /crm/v3/objects/contacts/batch/upsert``): inputs of
  ``id``, ``idProperty``, ``properties`` and ``objectWriteTraceId``, at most 100 a call,
  answered 200 with ``results`` (``id``, ``properties``, ``createdAt``, ``updatedAt``,
  ``archived``, ``new``, ``objectWriteTraceId``), or 207 with ``errors`` beside them;
  batch read (``idProperty: email``; missing records are errors of a 207) and batch
  archive (204);
- CRM properties (``/crm/v3/properties/contacts``, ``/{name}``, ``/groups``): the type
  and fieldType table (bool: booleancheckbox; enumeration: booleancheckbox, checkbox,
  radio, select; date and datetime: date; string: file, text, textarea; number: number),
  dates in UTC as ISO 8601 or midnight-UTC milliseconds, enumeration values separated by
  ``;``, strings of at most 65,536 characters, options replaced whole by an update;
- error handling: the error body (``status``, ``message``, ``correlationId``,
  ``category``, and for CRM objects ``errors`` with ``message``, ``code`` and
  ``context``), 207 multi-status with per-input errors, 401 and 403;
- API usage details: a rolling 10-second window and a daily limit per account, the
  ``X-HubSpot-RateLimit-*`` headers, 429 with ``policyName`` (``TEN_SECONDLY_ROLLING``
  or ``DAILY``) and ``Retry-After``; "property values can be cleared by passing an empty
  string"; read-only and non-existent properties are errors;
- lists v3 (docs/api-reference/crm-lists-v3, the lists guide): ``POST /crm/v3/lists``
  (``name``, ``objectTypeId``, ``processingType``; the answer's ``list`` with its
  ``listId``), ``POST /crm/v3/lists/search`` (``query``, ``processingTypes``, ``offset``,
  ``count``; ``lists``, ``hasMore``, ``offset``), ``GET /crm/v3/lists/{listId}``, and
  ``PUT /crm/v3/lists/{listId}/memberships/add-and-remove`` (``recordIdsToAdd`` and
  ``recordIdsToRemove``, both required; only for MANUAL or SNAPSHOT lists; records that
  do not exist come back in ``recordIdsMissing``; at most 100,000 ids a call);
- CRM search (``POST /crm/v3/objects/contacts/search``): ``filterGroups`` of
  ``filters`` (``propertyName``, ``operator``, ``value``), ``sorts``, ``properties``,
  ``limit`` (at most 200) and ``after``; 10,000 results at most per query (paging past
  them is a 400);
- communication preferences v3 (``/communication-preferences/v3``): ``definitions``,
  ``status/email/{emailAddress}``, ``unsubscribe`` (``emailAddress``,
  ``subscriptionId``; refused for an address already unsubscribed) and ``subscribe``,
  which crmsync must never call (a consent problem);
- GDPR delete (``POST /crm/v3/objects/contacts/gdpr-delete``, ``objectId`` and optional
  ``idProperty``; an unknown e-mail is blocklisted), 204.

A request the docs do not allow (a wrong path or method, a body of another shape, more
than 100 inputs, a property value that is not a string, one contact twice in a batch, an
update that drops an existing option) is answered 400 in HubSpot's error shape and
recorded in ``violations``, which fail the test (``strict_fakes`` in tests/contract.py).
What HubSpot itself refuses (an unknown property, a value the property's type does not
take, an invalid e-mail) is answered the same way but is no violation: tests provoke it.
Faults (5xx, 429, dropped connections) are injectable; call counters are public.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from tests.fakes.serving import DROP, Answer, Fault, Faults, Served

MAX_INPUTS = 100
STRING_MAX = 65_536
WINDOW = 10.0  # seconds of the rolling rate window
DAY = 86_400.0
CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
GROUPS = "/crm/v3/properties/contacts/groups"
LISTS = "/crm/v3/lists"
PREFERENCES = "/communication-preferences/v3"
MAX_LIST_IDS = 100_000  # record ids per membership call
MAX_LIST_PAGE = 500  # lists per search page
MAX_SEARCH_PAGE = 200
SEARCH_CAP = 10_000
LIST_CREATE_KEYS = frozenset(
    {
        "name",
        "objectTypeId",
        "processingType",
        "filterBranch",
        "listFolderId",
        "membershipSettings",
        "customProperties",
    }
)
LIST_SEARCH_KEYS = frozenset(
    {"query", "processingTypes", "offset", "count", "listIds", "additionalProperties", "sort"}
)
SEARCH_KEYS = frozenset({"filterGroups", "sorts", "properties", "limit", "after", "query"})
OPERATORS = frozenset({"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "HAS_PROPERTY"})
FIELD_TYPES = {
    "bool": frozenset({"booleancheckbox"}),
    "enumeration": frozenset({"booleancheckbox", "checkbox", "radio", "select"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"date"}),
    "string": frozenset({"file", "text", "textarea", "phonenumber"}),
    "number": frozenset({"number"}),
}
CREATE_KEYS = frozenset(
    {
        "name",
        "label",
        "type",
        "fieldType",
        "groupName",
        "description",
        "options",
        "displayOrder",
        "hasUniqueValue",
        "hidden",
        "formField",
    }
)
UPDATE_KEYS = CREATE_KEYS - {"name", "hasUniqueValue"}
OPTION_KEYS = frozenset({"label", "value", "displayOrder", "hidden", "description"})
INPUT_KEYS = frozenset({"id", "idProperty", "properties", "objectWriteTraceId"})
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_EMAIL = re.compile(r"^[^@\s;,]+@[^@\s;,]+\.[A-Za-z]{2,}$")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MILLIS = re.compile(r"-?\d+")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Property:
    name: str
    label: str
    type: str
    field_type: str
    group: str
    options: list[dict[str, Any]] = field(default_factory=list)
    hubspot_defined: bool = False
    read_only: bool = False
    unique: bool = False

    def render(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group,
            "description": "",
            "options": [dict(option) for option in self.options],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": self.unique,
            "hidden": False,
            "hubspotDefined": self.hubspot_defined,
            "formField": False,
            "archived": False,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
                "readOnlyOptions": self.hubspot_defined and self.type != "enumeration",
            },
        }

    def values(self) -> list[str]:
        return [str(option["value"]) for option in self.options]


# (name, type, fieldType, read-only): the contact properties of a new account crmsync meets
HUBSPOT_DEFINED = (
    ("email", "string", "text", False),
    ("firstname", "string", "text", False),
    ("lastname", "string", "text", False),
    ("phone", "string", "phonenumber", False),
    ("mobilephone", "string", "phonenumber", False),
    ("address", "string", "text", False),
    ("city", "string", "text", False),
    ("state", "string", "text", False),
    ("zip", "string", "text", False),
    ("country", "string", "text", False),
    ("company", "string", "text", False),
    ("jobtitle", "string", "text", False),
    ("hs_object_id", "number", "number", True),
    ("createdate", "datetime", "date", True),
    ("lastmodifieddate", "datetime", "date", True),
    ("hs_email_optout", "bool", "booleancheckbox", True),
)


@dataclass
class Contact:
    id: str
    properties: dict[str, str]
    created: datetime
    updated: datetime
    archived: bool = False

    @property
    def email(self) -> str:
        return self.properties.get("email", "")


@dataclass
class FakeList:
    id: str
    name: str
    processing_type: str
    object_type_id: str = "0-1"
    members: set[str] = field(default_factory=set)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def render(self) -> dict[str, Any]:
        return {
            "listId": self.id,
            "listVersion": 1,
            "name": self.name,
            "objectTypeId": self.object_type_id,
            "processingType": self.processing_type,
            "processingStatus": "COMPLETE",
            "createdAt": _stamp(self.created),
            "updatedAt": _stamp(self.created),
            "size": len(self.members),
        }


class ApiError(Exception):
    """An answer in HubSpot's error shape."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.category, self.message = status, category, message
        self.errors, self.extra, self.headers = errors, extra or {}, headers or {}

    def answer(self) -> Answer:
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
            **self.extra,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        headers = {"Content-Type": "application/json;charset=utf-8", **self.headers}
        return self.status, headers, json.dumps(body).encode()


def invalid(message: str, errors: list[dict[str, Any]] | None = None) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", message, errors=errors)


class FakeHubSpot:
    """The fake's state, knobs and counters; ``start()`` serves it on a random port."""

    def __init__(
        self,
        *,
        token: str | None = None,
        per_ten_seconds: int = 100,
        daily: int = 250_000,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        self.token = token or f"pat-eu1-{uuid.uuid4()}"
        self.latency = latency  # seconds each answer takes, beside the work (benchmarks)
        self.per_ten_seconds, self.daily = per_ten_seconds, daily
        self.clock = clock
        self.groups: dict[str, dict[str, Any]] = {
            "contactinformation": {
                "name": "contactinformation",
                "label": "Contact information",
                "displayOrder": 0,
                "archived": False,
            }
        }
        self.properties: dict[str, Property] = {
            name: Property(
                name,
                name,
                kind,
                field_type,
                "contactinformation",
                hubspot_defined=True,
                read_only=read_only,
                unique=name == "email",
                options=(
                    [
                        {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
                        {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
                    ]
                    if kind == "bool"
                    else []
                ),
            )
            for name, kind, field_type, read_only in HUBSPOT_DEFINED
        }
        self.contacts_by_id: dict[str, Contact] = {}
        # e-mail -> id of the contact last given it: ``contact`` finds one by e-mail without
        # a scan of every contact (a scan per upserted input is quadratic in a large
        # account); a hit is checked, so an archived or renamed contact is no match
        self._ids_by_email: dict[str, str] = {}
        self.calls: Counter[tuple[str, str]] = Counter()
        self.write_calls = 0
        self.rate_limited = 0
        self.violations: list[str] = []
        self.refusals: list[str] = []  # what HubSpot refused (no violation: tests provoke it)
        self.faults = Faults()
        self.inject = self.faults.inject
        # addresses HubSpot's own validation judges invalid, though they look fine elsewhere
        self.invalid_emails: set[str] = set()
        self.lists: dict[str, FakeList] = {}
        self.subscription_types = {"3001": "Marketing Information", "3002": "One to One"}
        self.subscribed: dict[str, set[str]] = {}  # address -> subscription type ids
        self.unsubscribed: dict[str, set[str]] = {}
        self.subscribes: list[str] = []  # every subscribe call: crmsync must make none
        self.gdpr_deleted: list[str] = []  # e-mails (or ids) deleted for good
        self.blocklisted: set[str] = set()
        self._next_list = 1
        self._next_id = 1001
        self._window: deque[float] = deque()
        self._day_start = clock()
        self._day_count = 0
        self._lock = threading.RLock()
        self._served = Served(self, (500, {"Content-Type": "application/json"}, b"{}"))

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeHubSpot:
        self._served.start()
        return self

    def stop(self) -> None:
        self._served.stop()

    @property
    def base_url(self) -> str:
        return f"{self._served.origin}"

    # -- knobs ---------------------------------------------------------------------

    def add_property(
        self,
        name: str,
        kind: str,
        field_type: str,
        *,
        group: str = "contactinformation",
        options: Iterable[str] = (),
        read_only: bool = False,
    ) -> Property:
        """A property made in HubSpot by somebody else (the merchant, another app)."""
        made = Property(
            name,
            name,
            kind,
            field_type,
            group,
            options=[_option(v, i) for i, v in enumerate(options)],
            read_only=read_only,
        )
        with self._lock:
            self.properties[name] = made
        return made

    def add_contact(self, email: str, **properties: str) -> Contact:
        with self._lock:
            return self._upsert_one(email.lower(), properties)[0]

    def opt_out(self, email: str) -> None:
        """The contact unsubscribes from all e-mail in HubSpot."""
        with self._lock:
            found = self.contact(email)
            assert found is not None, f"no contact {email}"
            found.properties["hs_email_optout"] = "true"
            found.updated = datetime.now(UTC)

    def add_list(
        self, name: str, processing_type: str = "MANUAL", members: Iterable[str] = ()
    ) -> FakeList:
        """A list made in HubSpot by somebody else (the merchant)."""
        with self._lock:
            made = FakeList(str(self._next_list), name, processing_type, members=set(members))
            self._next_list += 1
            self.lists[made.id] = made
            return made

    def list_named(self, name: str) -> FakeList | None:
        return next((found for found in self.lists.values() if found.name == name), None)

    def memberships(self) -> dict[str, set[str]]:
        """Contact id -> the names of the lists it is in (contacts not archived)."""
        found: dict[str, set[str]] = {}
        for each in self.lists.values():
            for member in each.members:
                contact = self.contacts_by_id.get(member)
                if contact is not None and not contact.archived:
                    found.setdefault(member, set()).add(each.name)
        return found

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.write_calls = 0
            self.rate_limited = 0

    # -- views ---------------------------------------------------------------------

    def contact(self, email: str) -> Contact | None:
        """The contact (not archived) with this e-mail, if there is one."""
        key = email.strip().lower()
        found = self.contacts_by_id.get(self._ids_by_email.get(key, ""))
        if found is None or found.archived or found.email != key:
            return None
        return found

    def contacts(self) -> dict[str, Contact]:
        """Contacts not archived, by e-mail."""
        return {c.email: c for c in self.contacts_by_id.values() if not c.archived}

    def values(self, email: str, name: str) -> list[str]:
        """The values of a (multiple-checkbox) property on one contact."""
        found = self.contact(email)
        value = found.properties.get(name, "") if found is not None else ""
        return [v for v in value.split(";") if v]

    def writes(self) -> int:
        return self.write_calls

    def consent_problems(self) -> list[str]:
        """crmsync must never subscribe anybody in HubSpot."""
        return [f"crmsync subscribed {email}" for email in self.subscribes]

    # -- request handling ------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Answer | None:
        """One request's answer, or None to drop the connection without one."""
        if self.latency:
            time.sleep(self.latency)
        path = target.split("?", 1)[0]
        handler, params = _find(method, path)
        with self._lock:
            self.calls[(method, path if handler is None else handler.__name__)] += 1
            if method != "GET" and not path.endswith(("/batch/read", "/search")):
                self.write_calls += 1
        if handler is None:
            self._violation(f"{method} {path}: no such HubSpot operation")
            return ApiError(404, "OBJECT_NOT_FOUND", f"No route for {method} {path}").answer()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token.strip() != self.token:
            return ApiError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication",
            ).answer()
        try:
            limit_headers = self._admit()
            payload = self._body(method, path, headers, body)
        except ApiError as exc:
            return exc.answer()
        fault = self.faults.take(method, path)
        if fault is not None and not fault.after:
            return _fault_answer(fault)
        try:
            with self._lock:
                status, result = handler(self, params, payload)
        except ApiError as exc:
            if exc.status == 400 and exc.category == "VALIDATION_ERROR":
                with self._lock:
                    self.refusals.append(f"{method} {path}: {exc.message}")
            status, head, data = exc.answer()
            head.update(limit_headers)
            return status, head, data
        if fault is not None:
            return _fault_answer(fault)
        head = {**limit_headers}
        if result is None:
            return status, head, b""
        head["Content-Type"] = "application/json;charset=utf-8"
        return status, head, json.dumps(result).encode()

    def _body(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
        if method == "GET":
            if body:
                self._violation(f"GET {path} with a body")
            return None
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            self._violation(f"{method} {path}: a body of type {media or 'none'}")
            raise ApiError(415, "VALIDATION_ERROR", f"Unsupported media type {media!r}")
        try:
            return json.loads(body)
        except ValueError as exc:
            self._violation(f"{method} {path}: the body is not JSON")
            raise invalid("Invalid input JSON: the body is not JSON") from exc

    def _admit(self) -> dict[str, str]:
        """Counts the request in the rolling 10-second window and the day; 429 when full."""
        with self._lock:
            moment = self.clock()
            while self._window and self._window[0] <= moment - WINDOW:
                self._window.popleft()
            if moment - self._day_start >= DAY:
                self._day_start, self._day_count = moment, 0
            if self._day_count >= self.daily:
                self.rate_limited += 1
                wait = self._day_start + DAY - moment
                raise _throttled("DAILY", "You have reached your daily limit.", wait)
            if len(self._window) >= self.per_ten_seconds:
                self.rate_limited += 1
                wait = self._window[0] + WINDOW - moment
                raise _throttled(
                    "TEN_SECONDLY_ROLLING",
                    "You have reached your ten_secondly_rolling limit.",
                    wait,
                )
            self._window.append(moment)
            self._day_count += 1
            return {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(WINDOW * 1000)),
                "X-HubSpot-RateLimit-Max": str(self.per_ten_seconds),
                "X-HubSpot-RateLimit-Remaining": str(self.per_ten_seconds - len(self._window)),
                "X-HubSpot-RateLimit-Daily": str(self.daily),
                "X-HubSpot-RateLimit-Daily-Remaining": str(self.daily - self._day_count),
            }

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    # -- model -----------------------------------------------------------------------

    def _upsert_one(self, email: str, properties: dict[str, str]) -> tuple[Contact, bool]:
        moment = datetime.now(UTC)
        found = self.contact(email)
        created = found is None
        if found is None:
            ident = str(self._next_id)
            self._next_id += 1
            found = Contact(ident, {"email": email}, moment, moment)
            self.contacts_by_id[ident] = found
        for name, value in properties.items():
            if value == "":
                found.properties.pop(name, None)  # an empty string clears the value
            else:
                found.properties[name] = value
        self._ids_by_email[found.email] = found.id  # new, or given another e-mail
        found.updated = moment
        return found, created

    def render_contact(
        self, contact: Contact, names: Iterable[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        stored = {
            **contact.properties,
            "hs_object_id": contact.id,
            "createdate": _stamp(contact.created),
            "lastmodifieddate": _stamp(contact.updated),
        }
        shown = stored if names is None else {n: stored.get(n) for n in {*names, "hs_object_id"}}
        return {
            "id": contact.id,
            "properties": shown,
            "createdAt": _stamp(contact.created),
            "updatedAt": _stamp(contact.updated),
            "archived": contact.archived,
            **extra,
        }

    def check_value(self, name: str, value: str) -> dict[str, Any] | None:
        """The error HubSpot gives for ``value`` of property ``name``, or None."""
        found = self.properties.get(name)
        if found is None:
            return _value_error(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
        if found.read_only:
            return _value_error(name, "READ_ONLY_VALUE", f'"{name}" is a read only property')
        if value == "":
            return None
        problem = _type_problem(found, value)
        if problem is None:
            return None
        return _value_error(name, problem[0], f'{value!r} is {problem[1]} for "{name}"')


def _type_problem(found: Property, value: str) -> tuple[str, str] | None:
    kind = found.type
    if kind == "string" and len(value) > STRING_MAX:
        return "INVALID_STRING", f"longer than {STRING_MAX} characters"
    if kind == "number" and not _NUMBER.fullmatch(value):
        return "INVALID_NUMBER", "not a plain decimal number"
    if kind == "bool" and value not in ("true", "false"):
        return "INVALID_BOOLEAN", "not true or false"
    if kind == "date" and not _is_date(value):
        return "INVALID_DATE", "not a YYYY-MM-DD date nor midnight UTC in milliseconds"
    if kind == "datetime" and not _is_time(value):
        return "INVALID_DATETIME", "not an ISO 8601 UTC time nor milliseconds"
    if kind == "enumeration":
        chosen = value.split(";") if found.field_type == "checkbox" else [value]
        missing = [v for v in chosen if v not in found.values()]
        if missing:
            return "INVALID_OPTION", f"not one of the allowed options ({missing[0]!r})"
    return None


def _is_date(value: str) -> bool:
    if _MILLIS.fullmatch(value):
        return int(value) % 86_400_000 == 0
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _is_time(value: str) -> bool:
    if _MILLIS.fullmatch(value):
        return True
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None)


def _value_error(name: str, code: str, message: str) -> dict[str, Any]:
    return {"message": message, "code": code, "context": {"propertyName": [name]}}


def _option(value: str, order: int) -> dict[str, Any]:
    return {"label": value, "value": value, "displayOrder": order, "hidden": False}


def _throttled(policy: str, message: str, wait: float) -> ApiError:
    return ApiError(
        429,
        "RATE_LIMITS",
        message,
        extra={"errorType": "RATE_LIMIT", "policyName": policy, "requestId": str(uuid.uuid4())},
        headers={"Retry-After": str(max(1, round(wait + 0.5)))},
    )


def _fault_answer(fault: Fault) -> Answer | None:
    if fault.status == DROP:
        return None
    status = int(fault.status)
    if status == 429:
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
        return ApiError(
            429,
            "RATE_LIMITS",
            "injected by the test",
            extra={"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
            headers=headers,
        ).answer()
    return ApiError(status, "INTERNAL_ERROR", "injected by the test").answer()


# -- routes -------------------------------------------------------------------------------

Handler = Callable[[FakeHubSpot, dict[str, str], Any], tuple[int, Any]]
_ROUTES: list[tuple[str, re.Pattern[str], Handler]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    regex = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(func: Handler) -> Handler:
        _ROUTES.append((method, regex, func))
        return func

    return register


def _find(method: str, path: str) -> tuple[Handler | None, dict[str, str]]:
    for wanted, regex, handler in _ROUTES:
        found = regex.match(path)
        if found is not None and wanted == method:
            return handler, found.groupdict()
    return None, {}


def _shape(fake: FakeHubSpot, what: str, ok: bool, message: str) -> None:
    """A request of a shape the docs do not allow: a violation, answered 400."""
    if not ok:
        fake._violation(f"{what}: {message}")
        raise invalid(f"Invalid input JSON: {message}")


def _inputs(fake: FakeHubSpot, what: str, body: Any, keys: frozenset[str]) -> list[Any]:
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - keys
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    inputs = body.get("inputs")
    _shape(fake, what, isinstance(inputs, list) and bool(inputs), "no inputs")
    _shape(fake, what, len(inputs) <= MAX_INPUTS, f"{len(inputs)} inputs (at most {MAX_INPUTS})")
    return list(inputs)


@route("POST", f"{CONTACTS}/batch/upsert")
def upsert_contacts(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST batch/upsert"
    inputs = _inputs(fake, what, body, frozenset({"inputs"}))
    seen: set[str] = set()
    value_errors: list[dict[str, Any]] = []
    for entry in inputs:
        _shape(fake, what, isinstance(entry, dict), "an input is not an object")
        unknown = set(entry) - INPUT_KEYS
        _shape(fake, what, not unknown, f"unknown input fields {sorted(unknown)}")
        _shape(fake, what, entry.get("idProperty") == "email", "idProperty is not 'email'")
        _shape(fake, what, isinstance(entry.get("id"), str), "an input's id is not a string")
        properties = entry.get("properties", {})
        _shape(fake, what, isinstance(properties, dict), "properties is not an object")
        for name, value in properties.items():
            _shape(fake, what, isinstance(value, str), f"{name}={value!r} is not a string")
            problem = fake.check_value(name, value)
            if problem is not None:
                value_errors.append(problem)
        key = entry["id"].strip().lower()
        _shape(fake, what, key not in seen, f"Duplicate IDs found in batch input: {key}")
        seen.add(key)
    if value_errors:
        raise invalid(
            "Property values were not valid: " + "; ".join(e["message"] for e in value_errors),
            errors=value_errors,
        )
    started = _stamp(datetime.now(UTC))
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for entry in inputs:
        email = entry["id"].strip().lower()
        trace = entry.get("objectWriteTraceId")
        extra = {"objectWriteTraceId": trace} if trace is not None else {}
        if not _EMAIL.match(email) or email in fake.invalid_emails:
            context = {"objectWriteTraceId": [trace]} if trace is not None else {"id": [email]}
            errors.append(
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": f"Email address {entry['id']} is invalid",
                    "context": context,
                }
            )
            continue
        contact, created = fake._upsert_one(email, dict(entry.get("properties", {})))
        names = [*entry.get("properties", {}), "email"]
        results.append(fake.render_contact(contact, names, new=created, **extra))
    answer: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": _stamp(datetime.now(UTC)),
    }
    if errors:
        answer["errors"], answer["numErrors"] = errors, len(errors)
        return 207, answer
    return 200, answer


@route("POST", f"{CONTACTS}/batch/read")
def read_contacts(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST batch/read"
    keys = frozenset({"inputs", "idProperty", "properties", "propertiesWithHistory"})
    inputs = _inputs(fake, what, body, keys)
    id_property = body.get("idProperty")
    _shape(fake, what, id_property in (None, "email"), f"idProperty {id_property!r}")
    names = body.get("properties") or []
    _shape(fake, what, all(isinstance(n, str) for n in names), "properties are not names")
    results, missing = [], []
    for entry in inputs:
        _shape(fake, what, isinstance(entry, dict) and set(entry) == {"id"}, "inputs are {id}")
        ident = str(entry["id"])
        if id_property == "email":
            found = fake.contact(ident)
        else:
            found = fake.contacts_by_id.get(ident)
            found = None if found is None or found.archived else found
        if found is None:
            missing.append(ident)
        else:
            results.append(fake.render_contact(found, names))
    answer: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": _stamp(datetime.now(UTC)),
        "completedAt": _stamp(datetime.now(UTC)),
    }
    if missing:
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }
        ]
        return 207, answer
    return 200, answer


@route("POST", f"{CONTACTS}/batch/archive")
def archive_contacts(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST batch/archive"
    for entry in _inputs(fake, what, body, frozenset({"inputs"})):
        ok = isinstance(entry, dict) and set(entry) == {"id"} and isinstance(entry["id"], str)
        _shape(fake, what, ok, "inputs are {id: string}")
        found = fake.contacts_by_id.get(entry["id"])
        if found is not None:
            found.archived = True
    return 204, None


@route("GET", GROUPS)
def list_groups(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {"results": [dict(group) for group in fake.groups.values()]}


@route("POST", GROUPS)
def create_group(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 201, new_group(fake, "POST groups", body, fake.groups)


def new_group(
    fake: FakeHubSpot, what: str, body: Any, groups: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A property group's create checked, and the group made among ``groups``."""
    ok = isinstance(body, dict) and set(body) <= {"name", "label", "displayOrder"}
    _shape(fake, what, ok, "a group is {name, label, displayOrder}")
    _shape(fake, what, {"name", "label"} <= set(body), "name and label are required")
    _shape(fake, what, bool(_NAME.fullmatch(str(body["name"]))), f"group name {body['name']!r}")
    if body["name"] in groups:
        raise ApiError(409, "OBJECT_ALREADY_EXISTS", f"group {body['name']} already exists")
    group = {"displayOrder": -1, **body, "archived": False}
    groups[body["name"]] = group
    return dict(group)


@route("GET", PROPERTIES)
def list_properties(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {"results": [found.render() for found in fake.properties.values()]}


@route("POST", PROPERTIES)
def create_property(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    made = new_property(fake, "POST properties", body, fake.groups, fake.properties)
    fake.properties[made.name] = made
    return 201, made.render()


def new_property(
    fake: FakeHubSpot,
    what: str,
    body: Any,
    groups: dict[str, dict[str, Any]],
    existing: dict[str, Property],
) -> Property:
    """A property create's body checked (the object's ``groups`` and ``existing``
    properties: contacts' here, deals' in hubspot_deals), as the property it makes."""
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - CREATE_KEYS
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    required = {"name", "label", "type", "fieldType", "groupName"}
    _shape(fake, what, required <= set(body), f"missing {sorted(required - set(body))}")
    name, kind, field_type = str(body["name"]), body["type"], body["fieldType"]
    _shape(fake, what, bool(_NAME.fullmatch(name)), f"property name {name!r}")
    _shape(fake, what, kind in FIELD_TYPES, f"type {kind!r}")
    _shape(fake, what, field_type in FIELD_TYPES[kind], f"fieldType {field_type!r} for {kind}")
    if body["groupName"] not in groups:
        raise invalid(f"Property group {body['groupName']} does not exist")
    if name in existing:
        raise ApiError(409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists.")
    options = _options(fake, what, body.get("options"), kind)
    return Property(name, str(body["label"]), kind, field_type, body["groupName"], options)


def _options(fake: FakeHubSpot, what: str, options: Any, kind: str) -> list[dict[str, Any]]:
    if kind not in ("enumeration", "bool"):
        _shape(fake, what, not options, f"a {kind} property has no options")
        return []
    _shape(fake, what, isinstance(options, list), f"a {kind} property needs its options")
    for item in options:
        ok = isinstance(item, dict) and {"label", "value"} <= set(item) <= OPTION_KEYS
        _shape(fake, what, ok, f"an option is {{label, value, ...}}: {item!r}")
        _shape(fake, what, ";" not in str(item["value"]), "an option value holds ';'")
    values = [str(item["value"]) for item in options]
    _shape(fake, what, len(set(values)) == len(values), "two options with one value")
    if kind == "bool":
        _shape(fake, what, sorted(values) == ["false", "true"], "bool options are true and false")
    return [dict(item) for item in options]


@route("GET", f"{PROPERTIES}/{{name}}")
def get_property(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    found = fake.properties.get(params["name"])
    if found is None:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find property {params['name']}")
    return 200, found.render()


@route("PATCH", f"{PROPERTIES}/{{name}}")
def update_property(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = f"PATCH properties/{params['name']}"
    found = fake.properties.get(params["name"])
    if found is None:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"Unable to find property {params['name']}")
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - UPDATE_KEYS
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    for key, now in (("type", found.type), ("fieldType", found.field_type)):
        _shape(fake, what, body.get(key, now) == now, f"crmsync never changes a property's {key}")
    if found.hubspot_defined and found.type != "enumeration":
        raise invalid(f"{found.name} is a HubSpot defined property; its definition is read only")
    if "options" in body:
        options = _options(fake, what, body["options"], found.type)
        kept = {str(o["value"]) for o in options}
        dropped = [v for v in found.values() if v not in kept]
        _shape(fake, what, not dropped, f"the update drops option {dropped[:1]}")
        found.options = options
    if "label" in body:
        found.label = str(body["label"])
    return 200, found.render()


@route("POST", f"{CONTACTS}/gdpr-delete")
def gdpr_delete(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST gdpr-delete"
    ok = isinstance(body, dict) and "objectId" in body and set(body) <= {"objectId", "idProperty"}
    _shape(fake, what, ok, "the body is {objectId, idProperty?}")
    _shape(fake, what, isinstance(body["objectId"], str), "objectId is not a string")
    if body.get("idProperty") == "email":
        found = fake.contact(body["objectId"])
        if found is None:
            fake.blocklisted.add(body["objectId"].strip().lower())
            return 204, None
    else:
        _shape(fake, what, body.get("idProperty") is None, f"idProperty {body.get('idProperty')!r}")
        found = fake.contacts_by_id.get(body["objectId"])
        if found is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"Contact {body['objectId']} not found")
    fake.gdpr_deleted.append(found.email)
    del fake.contacts_by_id[found.id]
    for each in fake.lists.values():
        each.members.discard(found.id)
    return 204, None


@route("POST", f"{CONTACTS}/search")
def search_contacts(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST contacts/search"
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - SEARCH_KEYS
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    limit = body.get("limit", 10)
    ok = isinstance(limit, int) and 0 < limit <= MAX_SEARCH_PAGE
    _shape(fake, what, ok, f"limit {limit!r} (at most {MAX_SEARCH_PAGE})")
    after = body.get("after", "0")
    _shape(fake, what, isinstance(after, str) and after.isdigit(), f"after {after!r}")
    start = int(after)
    if start + limit > SEARCH_CAP:
        raise invalid(f"Search results are limited to {SEARCH_CAP} per query")
    groups = body.get("filterGroups") or []
    _shape(fake, what, isinstance(groups, list) and len(groups) <= 5, "at most 5 filterGroups")
    tests = [_filters(fake, what, group) for group in groups]
    found = [
        c
        for c in fake.contacts_by_id.values()
        if not c.archived and (not tests or any(all(t(c) for t in g) for g in tests))
    ]
    for sort in reversed(body.get("sorts") or []):
        ok = isinstance(sort, dict) and set(sort) <= {"propertyName", "direction"}
        _shape(fake, what, ok, f"a sort is {{propertyName, direction}}: {sort!r}")
        found.sort(
            key=functools.partial(_sortable, fake, name=str(sort["propertyName"])),
            reverse=sort.get("direction") == "DESCENDING",
        )
    names = body.get("properties") or ["email", "firstname", "lastname"]
    page = found[start : start + limit]
    answer: dict[str, Any] = {
        "total": len(found),
        "results": [fake.render_contact(c, names) for c in page],
    }
    if start + limit < len(found):
        answer["paging"] = {"next": {"after": str(start + limit)}}
    return 200, answer


Test = Callable[[Contact], bool]


def _filters(fake: FakeHubSpot, what: str, group: Any) -> list[Test]:
    ok = (
        isinstance(group, dict) and set(group) == {"filters"} and isinstance(group["filters"], list)
    )
    _shape(fake, what, ok, "a filter group is {filters: [...]}")
    _shape(fake, what, len(group["filters"]) <= 6, "at most 6 filters a group")
    tests: list[Test] = []
    for each in group["filters"]:
        ok = isinstance(each, dict) and {"propertyName", "operator"} <= set(each)
        _shape(fake, what, ok, f"a filter is {{propertyName, operator, value}}: {each!r}")
        operator = each["operator"]
        _shape(fake, what, operator in OPERATORS, f"operator {operator!r}")
        value = each.get("value")
        _shape(fake, what, operator == "HAS_PROPERTY" or isinstance(value, str), "value")
        tests.append(_test(fake, str(each["propertyName"]), operator, value))
    return tests


def _test(fake: FakeHubSpot, name: str, operator: str, value: Any) -> Test:
    def test(contact: Contact) -> bool:
        have = _sortable(fake, contact, name=name)
        if operator == "HAS_PROPERTY":
            return have not in ("", None)
        wanted: Any = value
        if isinstance(have, int):
            wanted = int(value) if _MILLIS.fullmatch(value) else _millis_of(value)
        compare = {
            "EQ": have == wanted,
            "NEQ": have != wanted,
            "LT": have < wanted,
            "LTE": have <= wanted,
            "GT": have > wanted,
            "GTE": have >= wanted,
        }
        return bool(compare[operator])

    return test


def _sortable(fake: FakeHubSpot, contact: Contact, *, name: str) -> Any:
    if name == "lastmodifieddate":
        return round(contact.updated.timestamp() * 1000)
    if name == "createdate":
        return round(contact.created.timestamp() * 1000)
    if name == "hs_object_id":
        return int(contact.id)
    return contact.properties.get(name, "")


def _millis_of(value: str) -> int:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


# -- lists --------------------------------------------------------------------------------


@route("POST", LISTS)
def create_list(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST lists"
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - LIST_CREATE_KEYS
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    required = {"name", "objectTypeId", "processingType"}
    _shape(fake, what, required <= set(body), f"missing {sorted(required - set(body))}")
    _shape(fake, what, body["processingType"] == "MANUAL", "crmsync makes MANUAL lists only")
    _shape(fake, what, "filterBranch" not in body, "a MANUAL list has no filters")
    name = body["name"]
    _shape(fake, what, isinstance(name, str) and bool(name.strip()), "a list needs a name")
    if any(each.name.lower() == name.lower() for each in fake.lists.values()):
        raise ApiError(409, "OBJECT_ALREADY_EXISTS", f"A list named {name} already exists")
    made = FakeList(str(fake._next_list), name, "MANUAL", str(body["objectTypeId"]))
    fake._next_list += 1
    fake.lists[made.id] = made
    return 200, {"list": made.render()}


@route("POST", f"{LISTS}/search")
def search_lists(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST lists/search"
    _shape(fake, what, isinstance(body, dict), "the body is not an object")
    unknown = set(body) - LIST_SEARCH_KEYS
    _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
    count, offset = body.get("count", 20), body.get("offset", 0)
    ok = isinstance(count, int) and 0 < count <= MAX_LIST_PAGE
    _shape(fake, what, ok, f"count {count!r} (at most {MAX_LIST_PAGE})")
    _shape(fake, what, isinstance(offset, int) and offset >= 0, f"offset {offset!r}")
    query = str(body.get("query") or "").lower()
    kinds = body.get("processingTypes") or []
    found = [
        each
        for each in sorted(fake.lists.values(), key=lambda x: int(x.id))
        if query in each.name.lower() and (not kinds or each.processing_type in kinds)
    ]
    page = found[offset : offset + count]
    return 200, {
        "lists": [each.render() for each in page],
        "hasMore": offset + count < len(found),
        "offset": offset + len(page),
        "total": len(found),
    }


@route("GET", f"{LISTS}/{{list_id}}")
def get_list(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    found = fake.lists.get(params["list_id"])
    if found is None:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"List {params['list_id']} does not exist")
    return 200, {"list": found.render()}


@route("PUT", f"{LISTS}/{{list_id}}/memberships/add-and-remove")
def move_members(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "PUT memberships/add-and-remove"
    ok = isinstance(body, dict) and set(body) == {"recordIdsToAdd", "recordIdsToRemove"}
    _shape(fake, what, ok, "the body is {recordIdsToAdd, recordIdsToRemove}, both required")
    add, remove = body["recordIdsToAdd"], body["recordIdsToRemove"]
    for ids in (add, remove):
        ok = isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        _shape(fake, what, ok, "record ids are strings")
    _shape(fake, what, bool(add or remove), "nothing to add or remove")
    _shape(fake, what, len(add) + len(remove) <= MAX_LIST_IDS, f"more than {MAX_LIST_IDS} ids")
    _shape(fake, what, not set(add) & set(remove), "an id both added and removed")
    found = fake.lists.get(params["list_id"])
    if found is None:
        raise ApiError(404, "OBJECT_NOT_FOUND", f"List {params['list_id']} does not exist")
    if found.processing_type not in ("MANUAL", "SNAPSHOT"):
        raise invalid(f"List {found.id} is {found.processing_type}: members cannot be set")
    missing, added, removed = [], [], []
    for ident in add:
        contact = fake.contacts_by_id.get(ident)
        if contact is None or contact.archived:
            missing.append(ident)
        elif ident not in found.members:
            found.members.add(ident)
            added.append(ident)
    for ident in remove:
        if ident in found.members:
            found.members.discard(ident)
            removed.append(ident)
        elif ident not in fake.contacts_by_id:
            missing.append(ident)
    return 200, {"recordIdsMissing": missing, "recordIdsRemoved": removed, "recordsIdsAdded": added}


# -- communication preferences ---------------------------------------------------------------


@route("GET", f"{PREFERENCES}/definitions")
def definitions(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {
        "subscriptionDefinitions": [
            {
                "id": ident,
                "name": name,
                "description": name,
                "isActive": True,
                "isDefault": True,
                "isInternal": False,
                "purpose": "Marketing",
                "communicationMethod": "Email",
                "createdAt": _stamp(datetime(2024, 1, 1, tzinfo=UTC)),
                "updatedAt": _stamp(datetime(2024, 1, 1, tzinfo=UTC)),
            }
            for ident, name in fake.subscription_types.items()
        ]
    }


@route("GET", f"{PREFERENCES}/status/email/{{email}}")
def statuses(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    email = unquote(params["email"]).strip().lower()
    on = fake.subscribed.get(email, set()) - fake.unsubscribed.get(email, set())
    return 200, {
        "recipient": email,
        "subscriptionStatuses": [
            {
                "id": ident,
                "name": name,
                "description": name,
                "status": "SUBSCRIBED" if ident in on else "NOT_SUBSCRIBED",
                "sourceOfStatus": "SUBSCRIPTION_STATUS",
            }
            for ident, name in fake.subscription_types.items()
        ],
    }


@route("POST", f"{PREFERENCES}/unsubscribe")
def unsubscribe(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    what = "POST unsubscribe"
    keys = {"emailAddress", "subscriptionId", "legalBasis", "legalBasisExplanation"}
    ok = isinstance(body, dict) and {"emailAddress", "subscriptionId"} <= set(body) <= keys
    _shape(fake, what, ok, "the body is {emailAddress, subscriptionId, legalBasis?, ...}")
    email = str(body["emailAddress"]).strip().lower()
    ident = str(body["subscriptionId"])
    if ident not in fake.subscription_types:
        raise invalid(f"Subscription type {ident} does not exist")
    if ident in fake.unsubscribed.get(email, set()):
        raise invalid(f"{email} is already unsubscribed from subscription {ident}")
    fake.unsubscribed.setdefault(email, set()).add(ident)
    return 200, {
        "id": ident,
        "name": fake.subscription_types[ident],
        "description": "",
        "status": "NOT_SUBSCRIBED",
        "sourceOfStatus": "SUBSCRIPTION_STATUS",
    }


@route("POST", f"{PREFERENCES}/subscribe")
def subscribe(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    fake.subscribes.append(str((body or {}).get("emailAddress")))
    return 200, {"status": "SUBSCRIBED"}


# -- HTTP -------------------------------------------------------------------------------


@pytest.fixture
def hubspot_fake() -> Iterator[FakeHubSpot]:
    """A running fake; on teardown, violations fail the test."""
    fake = FakeHubSpot().start()
    try:
        yield fake
    finally:
        fake.stop()
    assert not fake.violations, "\n".join(fake.violations[:20])


# the commerce objects' routes (orders, carts, line items) and the deals' live beside
# this module
import tests.fakes.hubspot_commerce  # noqa: E402
import tests.fakes.hubspot_deals  # noqa: E402, F401
