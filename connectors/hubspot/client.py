"""The HubSpot operations crmsync uses, over the HTTP seam, with errors translated here.

No SDK: the CRM v3 bodies are small. One seam client for the account, authenticated with
the private app's token (``Authorization: Bearer``), its rate budget from
``config.RateLimits``; 429s and 5xx are retried by the seam honouring ``Retry-After``.
A 401 or 403 becomes ``HubSpotAccessError`` with HubSpot's own message (a 403 names the
missing scope); any other refusal becomes ``HubSpotApiError`` with HubSpot's error body
(``status``, ``message``, ``correlationId``, ``category`` and, for CRM objects, the
``errors`` with a ``code`` each).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

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
from connectors.http.retry import Sleep
from connectors.hubspot.config import HubSpotConfig
from crmsync.errors import AuthError, ConnectorError

CONTACTS = "/crm/v3/objects/contacts"
PROPERTIES = "/crm/v3/properties/contacts"
GROUPS = "/crm/v3/properties/contacts/groups"

_REFUSALS = classify_with(
    {
        401: Classification(Decision.RECORD_FAILURE, "HTTP 401: the access token was refused"),
        403: Classification(Decision.RECORD_FAILURE, "HTTP 403: the token lacks a scope"),
    }
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
        self._client = HttpClient(
            config.http_settings(),
            account=account,
            auth=BearerAuth(token),
            headers={"Accept": "application/json", "User-Agent": "crmsync"},
            secrets=[token],
            classifier=_REFUSALS,
            transport=transport,
            sleep=sleep,
            budgets=budgets,
        )

    def close(self) -> None:
        self._client.close()

    # -- plumbing ------------------------------------------------------------------

    def send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """The response (2xx or a refusal of this request); raises on 401/403."""
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self._client.request(method, path, content=content, headers=headers)
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


def _results(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = document.get("results")
    return [item for item in results or () if isinstance(item, dict)]
