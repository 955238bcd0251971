"""The HubSpot operations crmsync uses, over the HTTP seam, with errors translated here.

No SDK: the CRM v3 bodies are small. One seam client for the account, authenticated with
the private app's token (``Authorization: Bearer``), its rate budget from
``config.RateLimits``; 429s and 5xx are retried by the seam honouring ``Retry-After``.
A 401 or 403 becomes ``HubSpotAccessError`` with HubSpot's own message (a 403 names the
missing scope); any other refusal becomes ``HubSpotApiError`` with HubSpot's error body
(``status``, ``message``, ``correlationId``, ``category`` and, for CRM objects, the
``errors`` with a ``code`` each).

The day's calls: the account's budget keeps ``daily_reserve`` of them back (the seam's
``keep_daily``, fed by ``X-HubSpot-RateLimit-Daily-Remaining``), and a 429 of HubSpot's
``DAILY`` policy is not retried (each try would be refused until midnight). Either
becomes ``DailyLimitReached``, the core's ``SendLater`` saying when HubSpot's day ends:
the request was not sent (or HubSpot refused it uncounted), the destination answers its
people NOT_SENT, the core sends nothing more to HubSpot in the run, and they go in a run
after that with no retry attempt charged.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connectors.http import (
    BearerAuth,
    BudgetRegistry,
    Classification,
    Decision,
    HttpClient,
    classify_with,
)
from connectors.http.budget import QuotaSpent
from connectors.http.retry import Sleep
from connectors.hubspot.config import WINDOW_MARGIN, WINDOW_SECONDS, HubSpotConfig, RateLimits
from crmsync.errors import AuthError, ConnectorError, SendLater

CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
GROUPS = "/crm/v3/properties/contacts/groups"
LISTS = "/crm/v3/lists"
PREFERENCES = "/communication-preferences/v3"
CONTACT_TYPE = "0-1"  # HubSpot's object type id of contacts
DAILY_POLICY = "DAILY"  # the policyName of a 429 that lasts until midnight
LIST_PAGE = 100  # lists per search page

_BY_STATUS = classify_with(
    {
        401: Classification(Decision.RECORD_FAILURE, "HTTP 401: the access token was refused"),
        403: Classification(Decision.RECORD_FAILURE, "HTTP 403: the token lacks a scope"),
    }
)
_DAILY = Classification(Decision.RECORD_FAILURE, "HTTP 429: HubSpot's daily limit is reached")


def _classify(response: httpx.Response | None, error: BaseException | None) -> Classification:
    """The seam's table, but 401/403 and a 429 of the DAILY policy are read here: no retry
    can succeed before midnight, and each would spend a call."""
    if (
        response is not None
        and response.status_code == 429
        and error_body(response).get("policyName") == DAILY_POLICY
    ):
        return _DAILY
    return _BY_STATUS(response, error)


def _once(response: httpx.Response | None, error: BaseException | None) -> Classification:
    """``_classify`` for a create: a 5xx answer is not resent, since HubSpot may have made
    the objects before it failed (the caller finds them before creating again); a 429 is
    resent, HubSpot refused it unapplied."""
    if response is not None and response.status_code >= 500:
        return Classification(
            Decision.RECORD_FAILURE, f"HTTP {response.status_code}: a create is not resent"
        )
    return _classify(response, error)


class DailyLimitReached(SendLater):
    """HubSpot's daily limit is reached (or only the reserve is left): nothing more is
    sent before HubSpot's day ends, which the message names. Raised by a request that
    was not sent, or that HubSpot refused without counting it (a DAILY 429)."""

    def __init__(self, limits: RateLimits, why: str, now: datetime | None = None) -> None:
        moment = now or datetime.now(UTC)
        ends = limits.day_ends(moment)
        super().__init__(
            f"{why}; the run stops here, and what it did not send goes in a run after "
            f"{ends:%Y-%m-%d %H:%M} {limits.time_zone} "
            f"({ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC), when HubSpot's day starts again",
            retry_after=(ends - moment).total_seconds(),
        )


class HubSpotApiError(ConnectorError):
    """HubSpot refused one request (a 4xx other than 401/403, or an unreadable answer)."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        codes: Sequence[str] = (),
        correlation_id: str = "",
    ) -> None:
        text = f"HubSpot {status} {category}: {message}".strip()
        if correlation_id:
            text += f" (correlationId {correlation_id})"
        super().__init__(text)
        self.status = status
        self.category = category
        self.message = message
        self.codes = tuple(codes)  # the ``code`` of each of ``errors``, where HubSpot gives them
        self.correlation_id = correlation_id

    @classmethod
    def from_response(cls, response: httpx.Response) -> HubSpotApiError:
        body = error_body(response)
        details = body.get("errors")
        listed = details if isinstance(details, list) else []
        codes = [
            str(item["code"]) for item in listed if isinstance(item, Mapping) and item.get("code")
        ]
        return cls(
            response.status_code,
            str(body.get("category") or ""),
            str(body.get("message") or "")[:500],
            codes,
            str(body.get("correlationId") or ""),
        )


class HubSpotAccessError(AuthError):
    """401 (the token) or 403 (a scope), with HubSpot's message and what to do."""

    def __init__(self, status: int, message: str, what: str) -> None:
        if status == 401:
            text = (
                f"HubSpot refused the access token (401) on {what}: check access_token "
                "(HUBSPOT_ACCESS_TOKEN), the private app's token"
            )
        else:
            text = (
                f"the HubSpot private app lacks a scope for {what} (403: {message}); "
                "grant it under Settings > Integrations > Private apps"
            )
        super().__init__(text)
        self.status = status
        self.message = message


def error_body(response: httpx.Response) -> dict[str, Any]:
    """HubSpot's error document ({"message": <text>} when it is not JSON)."""
    try:
        found = response.json()
    except ValueError:
        return {"message": response.text[:300]}
    return found if isinstance(found, dict) else {}


class HubSpotApi:
    """HubSpot's endpoints as crmsync uses them."""

    def __init__(
        self,
        config: HubSpotConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        token = config.access_token.get_secret_value().strip()
        account = "hubspot:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        self.limits = config.rate_limits
        self._client = HttpClient(
            config.http_settings(),
            account=account,
            auth=BearerAuth(token),
            headers={"Accept": "application/json", "User-Agent": "crmsync"},
            secrets=[token],
            classifier=_classify,
            transport=transport,
            sleep=sleep,
            budgets=budgets,
        )
        now = datetime.now(UTC)
        day_left = (self.limits.day_ends(now) - now).total_seconds()
        budget = self._client.budget
        budget.keep_window(self.limits.per_ten_seconds, WINDOW_SECONDS + WINDOW_MARGIN)
        budget.keep_daily(self.limits.daily_reserve, day_left)
        self._refused_today = False  # a DAILY 429 was answered (this object lives for a run)

    def daily_left(self) -> int | None:
        """The calls HubSpot last said are left today, less those sent since (None: no
        answer has said yet)."""
        return self._client.budget.daily_left()

    def day_over(self) -> DailyLimitReached | None:
        """Why nothing more may be sent today (a fresh error to raise), or None: only the
        reserve is left of the day's calls, or HubSpot answered a 429 of its DAILY policy."""
        left = self.daily_left()
        if self._refused_today:
            return DailyLimitReached(self.limits, "HubSpot's daily API limit is reached (429)")
        if left is not None and left <= self.limits.daily_reserve:
            return DailyLimitReached(
                self.limits,
                f"HubSpot's daily API limit is nearly spent ({left:,} calls left today, "
                f"{self.limits.daily_reserve:,} kept back by daily_reserve)",
            )
        return None

    def close(self) -> None:
        self._client.close()

    # -- plumbing ------------------------------------------------------------------

    def send(
        self, method: str, path: str, body: Any = None, *, resend: bool = True
    ) -> httpx.Response:
        """The response (2xx or a refusal of this request); raises on 401/403. Not
        ``resend``: a 5xx answer is returned, not retried (a create that is not idempotent)."""
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        classifier = None if resend else _once
        try:
            response = self._client.request(
                method, path, content=content, headers=headers, classifier=classifier
            )
        except QuotaSpent as exc:
            over = self.day_over()
            raise over or DailyLimitReached(self.limits, str(exc)) from exc
        if response.status_code == 429:  # the DAILY policy: the others were retried
            self._refused_today = True
            raise DailyLimitReached(self.limits, "HubSpot's daily API limit is reached (429)")
        if response.status_code in (401, 403):
            message = str(error_body(response).get("message", ""))
            raise HubSpotAccessError(response.status_code, message, f"{method} {path}")
        return response

    def document(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The JSON body of a successful call ({} for 204); HubSpotApiError otherwise."""
        response = self.send(method, path, body)
        if not response.is_success:
            raise HubSpotApiError.from_response(response)
        if not response.content:
            return {}
        try:
            found = response.json()
        except ValueError as exc:
            raise HubSpotApiError(response.status_code, "UNREADABLE", "not JSON") from exc
        return found if isinstance(found, dict) else {}

    # -- properties ----------------------------------------------------------------

    def groups(self) -> list[dict[str, Any]]:
        return _results(self.document("GET", GROUPS))

    def create_group(self, name: str, label: str) -> None:
        self.document("POST", GROUPS, {"name": name, "label": label, "displayOrder": -1})

    def properties(self) -> list[dict[str, Any]]:
        """Every contact property, HubSpot's own included (the endpoint does not page)."""
        return _results(self.document("GET", PROPERTIES))

    def property(self, name: str) -> dict[str, Any]:
        return self.document("GET", f"{PROPERTIES}/{name}")

    def create_property(self, body: Mapping[str, Any]) -> None:
        self.document("POST", PROPERTIES, body)

    def update_property(self, name: str, body: Mapping[str, Any]) -> None:
        self.document("PATCH", f"{PROPERTIES}/{name}", body)

    # -- contacts ------------------------------------------------------------------

    def upsert(self, inputs: Sequence[Mapping[str, Any]]) -> httpx.Response:
        """POST .../batch/upsert: 200, 207 (some inputs refused) or a refusal of the batch;
        the caller reads it."""
        return self.send("POST", f"{CONTACTS}/batch/upsert", {"inputs": list(inputs)})

    def ids_by_email(self, emails: Sequence[str]) -> dict[str, str]:
        """e-mail (lower case) -> contact id, for the addresses HubSpot has a contact for;
        the others come back as NOT_FOUND errors of a 207, which say nothing more."""
        body = {
            "idProperty": "email",
            "inputs": [{"id": email} for email in emails],
            "properties": ["email"],
        }
        found = self.document("POST", f"{CONTACTS}/batch/read", body)
        ids: dict[str, str] = {}
        for item in _results(found):
            email = (item.get("properties") or {}).get("email")
            if isinstance(email, str) and item.get("id"):
                ids[email.strip().lower()] = str(item["id"])
        return ids

    def archive(self, ids: Sequence[str]) -> None:
        """POST .../batch/archive: the contacts go to HubSpot's recycle bin (204)."""
        self.document("POST", f"{CONTACTS}/batch/archive", {"inputs": [{"id": i} for i in ids]})

    def gdpr_delete(self, contact_id: str) -> None:
        """POST .../gdpr-delete by record id (one contact a call; 204): the contact and its
        history are deleted for good. By id only: by e-mail, an address HubSpot has no
        contact for would be blocked from ever being used again."""
        self.document("POST", f"{CONTACTS}/gdpr-delete", {"objectId": contact_id})

    def search_contacts(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST .../search: one page of contacts matching the filters."""
        return self.document("POST", f"{CONTACTS}/search", body)

    # -- lists ---------------------------------------------------------------------

    def manual_lists(self, query: str) -> list[dict[str, Any]]:
        """Every MANUAL list whose name holds ``query`` (POST .../lists/search)."""
        return self._lists(query, ["MANUAL"])

    def all_lists(self, query: str) -> list[dict[str, Any]]:
        """Every list whose name holds ``query``, of any processing type."""
        return self._lists(query, [])

    def _lists(self, query: str, kinds: list[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            body: dict[str, Any] = {"query": query, "offset": offset, "count": LIST_PAGE}
            if kinds:
                body["processingTypes"] = kinds
            page = self.document("POST", f"{LISTS}/search", body)
            found += [item for item in page.get("lists") or () if isinstance(item, dict)]
            following = page.get("offset")
            if not page.get("hasMore") or not isinstance(following, int) or following <= offset:
                return found
            offset = following

    def create_list(self, name: str) -> str:
        """A MANUAL contact list; its id (HubSpot's ILS id)."""
        body = {"name": name, "objectTypeId": CONTACT_TYPE, "processingType": "MANUAL"}
        made = self.document("POST", LISTS, body).get("list") or {}
        if not made.get("listId"):
            raise HubSpotApiError(200, "UNREADABLE", f"no listId for the new list {name!r}")
        return str(made["listId"])

    def move_members(self, list_id: str, add: Sequence[str], remove: Sequence[str]) -> set[str]:
        """PUT .../memberships/add-and-remove: record ids in and out of a MANUAL list; the
        ids HubSpot has no record for (not moved)."""
        body = {"recordIdsToAdd": list(add), "recordIdsToRemove": list(remove)}
        path = f"{LISTS}/{quote(list_id, safe='')}/memberships/add-and-remove"
        answer = self.document("PUT", path, body)
        return {str(i) for i in answer.get("recordIdsMissing") or ()}

    # -- communication preferences -----------------------------------------------------

    def subscription_types(self) -> list[dict[str, Any]]:
        """The account's subscription types (GET .../definitions)."""
        found = self.document("GET", f"{PREFERENCES}/definitions")
        listed = found.get("subscriptionDefinitions")
        return [item for item in listed or () if isinstance(item, dict)]

    def subscription_statuses(self, email: str) -> list[dict[str, Any]]:
        """One address's status per subscription type (GET .../status/email/{address})."""
        found = self.document("GET", f"{PREFERENCES}/status/email/{quote(email, safe='@')}")
        listed = found.get("subscriptionStatuses")
        return [item for item in listed or () if isinstance(item, dict)]

    def unsubscribe(self, email: str, subscription_id: str) -> httpx.Response:
        """POST .../unsubscribe from one subscription type; the caller reads a refusal
        (HubSpot refuses to unsubscribe an address that is not subscribed)."""
        body = {"emailAddress": email, "subscriptionId": subscription_id}
        return self.send("POST", f"{PREFERENCES}/unsubscribe", body)


def _results(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = document.get("results")
    return [item for item in results or () if isinstance(item, dict)]
