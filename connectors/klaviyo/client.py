"""The Klaviyo operations crmsync uses, over the HTTP seam, with errors translated here.

No SDK: the JSON:API bodies are small and built by ``payloads``. Every call names its
endpoint group, and each group has its own ``HttpClient`` and so its own rate budget
(``config.RateLimits``), fed by Klaviyo's ``RateLimit-*`` headers; 429s and 5xx are
retried by the seam honouring ``Retry-After``. A 401 or 403 becomes ``KlaviyoAccessError``
carrying Klaviyo's own detail (which names a missing scope); any other refusal of one
request becomes ``KlaviyoApiError`` with Klaviyo's code and detail.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from connectors.http import (
    ApiKeyAuth,
    BudgetRegistry,
    Classification,
    Decision,
    HttpClient,
    classify_with,
)
from connectors.http.classify import rate_limit_remaining, rate_limit_reset
from connectors.http.pagination import BodyCursorPaginator, Page, at
from connectors.http.retry import Sleep
from connectors.klaviyo.config import GROUPS, Group, KlaviyoConfig
from crmsync.errors import AuthError, ConnectorError

MEDIA = "application/vnd.api+json"
PAGE = 100  # the largest page[size] of profile collections
CURSOR = "page[cursor]"  # the query parameter a next page is asked for with
LIST_PAGE = 10  # GET /api/lists pages hold at most 10
SUPPRESSION_JOBS = "/api/profile-suppression-bulk-create-jobs"
EVENT_JOBS = "/api/event-bulk-create-jobs"

_READ_REFUSALS = classify_with(
    {
        401: Classification(Decision.RECORD_FAILURE, "HTTP 401: the API key was refused"),
        403: Classification(Decision.RECORD_FAILURE, "HTTP 403: the API key lacks a scope"),
    }
)


# a read to make instead of one whose first page has a next one (``pages_side_by_side``)
Split = Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]]
Read = tuple[dict[str, Any], BodyCursorPaginator]  # a read's next query and its cursor


class KlaviyoApiError(ConnectorError):
    """Klaviyo refused one request (a 4xx other than 401/403, or an unreadable answer)."""

    def __init__(self, status: int, code: str, detail: str, pointer: str = "") -> None:
        super().__init__(f"Klaviyo {status} {code}: {detail}".strip())
        self.status = status
        self.code = code
        self.detail = detail
        self.pointer = pointer  # where in the request body Klaviyo found the problem

    @classmethod
    def from_response(cls, response: httpx.Response) -> KlaviyoApiError:
        first = first_error(response)
        source = first.get("source")
        pointer = source.get("pointer") if isinstance(source, Mapping) else None
        return cls(
            response.status_code,
            str(first.get("code", "")),
            str(first.get("detail") or first.get("title") or "")[:500],
            pointer if isinstance(pointer, str) else "",
        )


class KlaviyoAccessError(AuthError):
    """401 (the key) or 403 (a scope), with Klaviyo's detail and what to do."""

    def __init__(self, status: int, detail: str, what: str) -> None:
        if status == 401:
            text = (
                f"Klaviyo refused the API key (401) on {what}: check api_key "
                "(KLAVIYO_API_KEY), a private key starting with 'pk_'"
            )
        else:
            text = (
                f"the Klaviyo API key lacks a scope for {what} (403: {detail}); "
                "grant it in Klaviyo under Settings > API keys"
            )
        super().__init__(text)
        self.status = status
        self.detail = detail


def first_error(response: httpx.Response) -> dict[str, Any]:
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return {"detail": response.text[:300]}
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return {}


def next_cursor(document: Any) -> str | None:
    """The ``page[cursor]`` of a collection's ``links.next``: the next page is asked of the
    configured base URL (a proxy stays in the path), not of the host the link names."""
    link = at("links", "next")(document)
    if not isinstance(link, str) or not link:
        return None
    cursors = parse_qs(urlsplit(link).query).get("page[cursor]")
    if not cursors:
        raise ConnectorError(f"Klaviyo's next page link has no cursor: {link}")
    return cursors[0]


class KlaviyoApi:
    """Klaviyo's endpoints as crmsync uses them; one seam client per endpoint group."""

    def __init__(
        self,
        config: KlaviyoConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        key = config.api_key.get_secret_value().strip()
        account = "klaviyo:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        headers = {"revision": config.revision, "Accept": MEDIA, "User-Agent": "crmsync"}
        self._clients: dict[Group, HttpClient] = {
            group: HttpClient(
                config.http_settings(group),
                account=f"{account}:{group}",
                auth=ApiKeyAuth(key, header="Authorization", prefix="Klaviyo-API-Key "),
                headers=headers,
                secrets=[key],
                classifier=_READ_REFUSALS,
                transport=transport,
                sleep=sleep,
                budgets=budgets,
            )
            for group in GROUPS
        }
        for group, client in self._clients.items():
            getattr(config.rate_limits, group).keep(client.budget)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # -- plumbing ------------------------------------------------------------------

    def send(
        self,
        group: Group,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """The response (2xx or a refusal of this request); raises on 401/403."""
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": MEDIA} if content is not None else None
        response = self._clients[group].request(
            method, path, params=params, content=content, headers=headers
        )
        if response.status_code in (401, 403):
            raise KlaviyoAccessError(
                response.status_code, str(first_error(response).get("detail", "")), path
            )
        return response

    def document(
        self,
        group: Group,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """The JSON body of a successful call ({} for 202/204); KlaviyoApiError otherwise."""
        response = self.send(group, method, path, params=params, body=body)
        if not response.is_success:
            raise KlaviyoApiError.from_response(response)
        if not response.content:
            return {}
        try:
            found = orjson.loads(response.content)
        except ValueError as exc:
            raise KlaviyoApiError(response.status_code, "unreadable", "not JSON") from exc
        return found if isinstance(found, dict) else {}

    def pages(self, group: Group, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated collection."""
        pages = BodyCursorPaginator(cursor=next_cursor, param=CURSOR)
        query = dict(params)
        while True:
            found = self.document(group, "GET", path, params=query)
            yield from (item for item in found.get("data") or [] if isinstance(item, dict))
            following = pages.next(Page.of_document(found))
            if following is None:
                return
            query.update(following.params)

    def pages_side_by_side(
        self,
        group: Group,
        path: str,
        queries: Sequence[Mapping[str, Any]],
        pool: Executor,
        split: Split | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of several cursor-paginated reads of one collection (``queries``),
        their pages fetched side by side in ``pool``: each read's first page in turn, then
        the next pages of those still going, and so on, so a read of many pages takes
        about as many rounds as its longest part has pages. The calls run in the pool and
        wait on nothing of the caller's, which takes each page's items in that order.

        At most two calls per connection of the group are in flight or answered and not
        taken yet: a complete import job's 10,000 people are 100 reads, whose pages held
        at once were 50 MB of decoded profiles.

        ``split``: for a read whose first page has a next one, the reads to make instead
        (that page's items are then left to them); none, and its cursor is followed."""

        def read(query: Mapping[str, Any]) -> Read:
            return dict(query), BodyCursorPaginator(cursor=next_cursor, param=CURSOR)

        window = 2 * self._clients[group].settings.rate.max_concurrency
        waiting = deque(read(query) for query in queries)
        calls: deque[tuple[Read, Future[dict[str, Any]]]] = deque()
        while waiting or calls:
            while waiting and len(calls) < window:
                going = waiting.popleft()
                calls.append(
                    (going, pool.submit(self.document, group, "GET", path, params=going[0]))
                )
            (query, pages), call = calls.popleft()
            found = call.result()
            further = pages.next(Page.of_document(found))
            parts = split(query) if split and further and CURSOR not in query else ()
            if parts:
                waiting.extend(read(part) for part in parts)
                continue
            yield from (item for item in found.get("data") or [] if isinstance(item, dict))
            if further is not None:
                waiting.append(({**query, **further.params}, pages))

    # -- profiles ------------------------------------------------------------------

    def profiles(
        self,
        filter_: str | None,
        fields: Sequence[str],
        *,
        subscriptions: bool = True,
        page_size: int = PAGE,
    ) -> Iterator[dict[str, Any]]:
        return self.pages(
            "profiles", "/api/profiles", _profile_query(filter_, fields, subscriptions, page_size)
        )

    def profiles_side_by_side(
        self,
        filters: Sequence[str],
        fields: Sequence[str],
        pool: Executor,
        split: Callable[[str], Sequence[str]] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The profiles of each filter (with their subscriptions), the filters' pages
        fetched side by side (``pages_side_by_side``); a profile more than one filter
        matches comes once for each. ``split``: the filters to read instead of one whose
        first page has a next one (none: its pages are followed)."""
        queries = [_profile_query(f, fields, True, PAGE) for f in filters]
        cut: Split | None = None
        if split is not None:

            def cut(query: Mapping[str, Any]) -> list[dict[str, Any]]:
                return [_profile_query(f, fields, True, PAGE) for f in split(query["filter"])]

        return self.pages_side_by_side("profiles", "/api/profiles", queries, pool, cut)

    def import_profile(self, entry: Mapping[str, Any]) -> httpx.Response:
        """POST /api/profile-import: 201 created, 200 updated, 4xx refused (the caller reads it)."""
        return self.send(
            "profiles",
            "POST",
            "/api/profile-import",
            params={"additional-fields[profile]": "subscriptions"},
            body={"data": entry},
        )

    # -- bulk import jobs ------------------------------------------------------------

    def create_import_job(self, body: Mapping[str, Any]) -> str:
        found = self.document("import_jobs", "POST", "/api/profile-bulk-import-jobs", body=body)
        job = (found.get("data") or {}).get("id")
        if not job:
            raise KlaviyoApiError(202, "no_job_id", "Klaviyo accepted the job but sent no id")
        return str(job)

    def import_job(self, job: str) -> dict[str, Any]:
        found = self.document("import_jobs", "GET", f"/api/profile-bulk-import-jobs/{job}")
        data = found.get("data") or {}
        return dict(data.get("attributes") or {})

    def import_errors(self, job: str) -> Iterator[dict[str, Any]]:
        return self.pages(
            "import_jobs",
            f"/api/profile-bulk-import-jobs/{job}/import-errors",
            {"page[size]": PAGE},
        )

    # -- consent ---------------------------------------------------------------------

    def subscribe(self, body: Mapping[str, Any]) -> None:
        self.document(
            "subscriptions", "POST", "/api/profile-subscription-bulk-create-jobs", body=body
        )

    def unsubscribe(self, body: Mapping[str, Any]) -> None:
        self.document(
            "subscriptions", "POST", "/api/profile-subscription-bulk-delete-jobs", body=body
        )

    # -- suppressions (people deleted at the source) ---------------------------------

    def suppress(self, body: Mapping[str, Any]) -> str:
        """Starts a suppression bulk create job; its id (Klaviyo applies it later)."""
        found = self.document("subscriptions", "POST", SUPPRESSION_JOBS, body=body)
        job = (found.get("data") or {}).get("id")
        if not job:
            raise KlaviyoApiError(202, "no_job_id", "Klaviyo accepted the job but sent no id")
        return str(job)

    def suppression_job(self, job: str) -> dict[str, Any]:
        found = self.document("subscriptions", "GET", f"{SUPPRESSION_JOBS}/{job}")
        data = found.get("data") or {}
        return dict(data.get("attributes") or {})

    def latest_suppression_jobs(self) -> list[dict[str, Any]]:
        """One page of the account's suppression jobs, newest first: the cheapest call that
        needs ``subscriptions:read`` (``check`` tries the scope with it)."""
        params = {"sort": "-created"}
        found = self.document("subscriptions", "GET", SUPPRESSION_JOBS, params=params)
        return [item for item in found.get("data") or [] if isinstance(item, dict)]

    # -- events ----------------------------------------------------------------------

    def create_events(self, body: Mapping[str, Any]) -> httpx.Response:
        """POST /api/event-bulk-create-jobs: 202 accepted, or a refusal the caller reads
        (Klaviyo refuses the whole request, pointing at the entries it found wrong)."""
        return self.send("events", "POST", EVENT_JOBS, body=body)

    # -- lists -----------------------------------------------------------------------

    def list_items(
        self, filter_: str | None = None, fields: Sequence[str] = ("name",)
    ) -> Iterator[dict[str, Any]]:
        """The account's lists, oldest first."""
        params: dict[str, Any] = {
            "fields[list]": ",".join(fields),
            "page[size]": LIST_PAGE,
            "sort": "created",
        }
        if filter_ is not None:
            params["filter"] = filter_
        return self.pages("lists", "/api/lists", params)

    def lists(self, filter_: str | None = None) -> Iterator[tuple[str, str]]:
        """(name, id) of the account's lists, oldest first, so a duplicate name maps to the
        list crmsync made first."""
        for item in self.list_items(filter_):
            name = (item.get("attributes") or {}).get("name")
            if isinstance(name, str) and item.get("id"):
                yield name, str(item["id"])

    def create_list(self, name: str) -> tuple[str, float | None]:
        """(the new list's id, seconds until Klaviyo allows another create when it says that
        none are left in its current window)."""
        body = {"data": {"type": "list", "attributes": {"name": name}}}
        response = self.send("list_create", "POST", "/api/lists", body=body)
        if not response.is_success:
            raise KlaviyoApiError.from_response(response)
        ident = (response.json().get("data") or {}).get("id")
        if not ident:
            raise KlaviyoApiError(201, "no_list_id", f"Klaviyo created {name!r} but sent no id")
        remaining = rate_limit_remaining(response)
        exhausted = rate_limit_reset(response) if remaining is not None and remaining <= 0 else None
        return str(ident), exhausted

    def move_members(self, list_id: str, profile_ids: Sequence[str], *, add: bool) -> None:
        body = {"data": [{"type": "profile", "id": ident} for ident in profile_ids]}
        path = f"/api/lists/{list_id}/relationships/profiles"
        self.document("list_members", "POST" if add else "DELETE", path, body=body)


def _profile_query(
    filter_: str | None, fields: Sequence[str], subscriptions: bool, page_size: int
) -> dict[str, Any]:
    params: dict[str, Any] = {"fields[profile]": ",".join(fields), "page[size]": page_size}
    if filter_ is not None:
        params["filter"] = filter_
    if subscriptions:
        params["additional-fields[profile]"] = "subscriptions"
    return params
