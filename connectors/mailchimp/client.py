"""The official SDK, routed through crmsync's HTTP seam, behind a small typed facade.

``mailchimp-marketing`` builds correct paths, query strings and bodies, but sends every
call with a fresh ``requests`` connection, knows nothing of 429 or retries and folds every
failure into one ``ApiClientError``. ``SeamApiClient`` keeps the SDK's request building
and replaces only its sending: every call goes through ``HttpClient`` (shared connection
pool, retries honouring Retry-After, the account's concurrency cap, redaction, the
classification table). ``MailchimpApi`` then translates the SDK's error back into ours at
this boundary: our own errors that the SDK wrapped are unwrapped, an HTTP refusal becomes
``MailchimpApiError`` with Mailchimp's title and detail.

Bodies go out and answers come back as JSON through orjson (``json_body``,
``_SdkResponse.json``): a batch call carries 500 members each way (Mailchimp's answer
echoes every member whole), and the standard library's json was a fifth of such a call's
CPU. This SDK version hands the body it was given to ``request`` untouched (it sanitises
only path, query and header parameters), so nothing else on its path costs per member.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, as_completed
from typing import Any, TypeVar

import httpx
import orjson

from connectors.http import HttpClient
from connectors.http.pagination import NextPage, OffsetPaginator, Page, at
from connectors.mailchimp.sdk import ApiClient, ApiClientError, ListsApi, PingApi
from crmsync.errors import ConnectorError, CrmsyncError

T = TypeVar("T")
PAGE = 1000  # the largest ``count`` Mailchimp's collection endpoints accept
PAGES_AT_ONCE = 20  # pages of a concurrent read fetched (and held) at a time
# Types orjson would write where the standard library refuses them: handed back to it
# (``json_body``), so that a body the SDK could not send before is not sent now either.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class MailchimpApiError(ConnectorError):
    """Mailchimp answered a call with a 4xx (other than 401/403, which are AuthErrors)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"Mailchimp {status} {title}: {detail}".strip())
        self.status = status
        self.title = title
        self.detail = detail

    @classmethod
    def from_sdk(cls, error: ApiClientError) -> MailchimpApiError:
        body: Any = error.text
        if isinstance(body, str | bytes):
            try:
                body = json.loads(body)
            except ValueError:
                body = {"detail": str(body)[:300]}
        if not isinstance(body, Mapping):
            body = {}
        status = int(error.status_code or body.get("status") or 0)
        return cls(status, str(body.get("title", "")), str(body.get("detail", "")))


class _SdkResponse:
    """The few ``requests.Response`` members the SDK's ``call_api`` reads, over httpx."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.headers = response.headers
        self.status_code = response.status_code

    @property
    def ok(self) -> bool:
        return self._response.is_success

    @property
    def text(self) -> str:
        return self._response.text

    def json(self) -> Any:
        return orjson.loads(self._response.content)


class SeamApiClient(ApiClient):  # type: ignore[misc]  # the SDK ships no type hints
    """The SDK's ApiClient with its sending replaced by the seam's ``HttpClient``."""

    def __init__(self, http: HttpClient) -> None:
        super().__init__({})
        self.host = http.base_url.rstrip("/")
        # The SDK replaces the substring "server" anywhere in the URL with this value;
        # the base URL is already complete, so the replacement is switched off.
        self.server = ""
        self._http = http

    def request(
        self,
        method: str,
        url: str,
        query_params: list[tuple[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> _SdkResponse:
        # The SDK's own headers (its Content-Type on GETs, its User-Agent) and its auth are
        # dropped: the seam's client carries auth, and a body is sent as JSON here.
        del headers
        sent: dict[str, str] = {"Accept": "application/json"}
        content = None
        if body is not None:
            content = json_body(body)
            sent["Content-Type"] = "application/json"
        response = self._http.request(
            method,
            url,
            params=dict(query_params) if query_params else None,
            content=content,
            headers=sent,
        )
        return _SdkResponse(response)


def json_body(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON, as httpx's ``json=`` writes it, ten times faster.

    A body orjson refuses goes the standard library's way, which writes what it can and
    raises for the rest, as before: datetimes and dataclasses (which orjson would write
    and the SDK's path refused), integers past 64 bits and keys that are not strings.
    """
    try:
        return orjson.dumps(body, option=_PASSTHROUGH)
    except TypeError:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")


def call(operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs one SDK operation, translating its one error type at the boundary."""
    try:
        return operation(*args, **kwargs)
    except ApiClientError as exc:
        inner = exc.text
        if isinstance(inner, CrmsyncError):  # ours (AuthError, TransientError...), wrapped
            raise inner from inner.__cause__
        if isinstance(inner, BaseException):  # anything else the SDK caught while sending
            raise ConnectorError(f"Mailchimp call failed: {type(inner).__name__}") from inner
        raise MailchimpApiError.from_sdk(exc) from exc


class MailchimpApi:
    """The Mailchimp operations crmsync uses, typed, paginated and with translated errors."""

    def __init__(self, http: HttpClient) -> None:
        self.sdk = SeamApiClient(http)
        self.lists = ListsApi(self.sdk)
        self.ping_api = PingApi(self.sdk)

    def ping(self) -> dict[str, Any]:
        return call(self.ping_api.get)

    def get_list(self, list_id: str) -> dict[str, Any]:
        return call(self.lists.get_list, list_id, fields=["id", "name", "stats.member_count"])

    def merge_fields(self, list_id: str) -> Iterator[dict[str, Any]]:
        return self._pages(
            "merge_fields",
            lambda offset: call(
                self.lists.get_list_merge_fields, list_id, count=PAGE, offset=offset
            ),
        )

    def add_merge_field(self, list_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return call(self.lists.add_list_merge_field, list_id, dict(body))

    def update_merge_field(
        self, list_id: str, merge_id: int, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return call(self.lists.update_list_merge_field, list_id, str(merge_id), dict(body))

    def static_segments(self, list_id: str) -> Iterator[dict[str, Any]]:
        fields = ["segments.id", "segments.name", "total_items"]
        return self._pages(
            "segments",
            lambda offset: call(
                self.lists.list_segments,
                list_id,
                type="static",
                fields=fields,
                count=PAGE,
                offset=offset,
            ),
        )

    def create_static_segment(
        self, list_id: str, name: str, members: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A new tag, with ``members`` (addresses on the list) tagged in the same call."""
        body = {"name": name, "static_segment": list(members)}
        return call(self.lists.create_segment, list_id, body)

    def batch_members(self, list_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return call(self.lists.batch_list_members, list_id, dict(body))

    def batch_segment(
        self, list_id: str, segment_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return call(self.lists.batch_segment_members, dict(body), list_id, segment_id)

    def members(
        self,
        list_id: str,
        *,
        status: str,
        since_last_changed: str | None,
        fields: list[str],
        pool: Executor | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Members with ``status`` changed since ``since_last_changed``; with ``pool``, the
        pages after the first are fetched concurrently (a large read-back, such as the
        unsubscribes a first sync pushed, then costs rounds of calls, not one per page)."""
        if pool is None:
            return self._pages(
                "members", self._member_pages(list_id, status, since_last_changed, fields)
            )
        found = self.members_by_status(
            list_id, [status], since_last_changed=since_last_changed, fields=fields, pool=pool
        )
        return (member for _, member in found)

    def members_by_status(
        self,
        list_id: str,
        statuses: Sequence[str],
        *,
        since_last_changed: str | None,
        fields: list[str],
        pool: Executor,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(status, member) of the members with each of ``statuses`` changed since
        ``since_last_changed``, the statuses read side by side on ``pool``: their first
        pages in one round of calls, then every later page of all of them, so a read of
        two statuses costs the rounds of the larger one, not the sum."""
        fetchers = [
            self._member_pages(list_id, status, since_last_changed, fields) for status in statuses
        ]
        for index, member in self._concurrent_pages("members", fetchers, pool):
            yield statuses[index], member

    def _member_pages(
        self, list_id: str, status: str, since_last_changed: str | None, fields: list[str]
    ) -> Callable[[int], Any]:
        """The call for one page (by its offset) of the members with ``status``."""
        filters: dict[str, Any] = {"status": status, "fields": [*fields, "total_items"]}
        if since_last_changed is not None:
            filters["since_last_changed"] = since_last_changed

        def fetch(offset: int) -> Any:
            return call(
                self.lists.get_list_members_info, list_id, count=PAGE, offset=offset, **filters
            )

        return fetch

    @staticmethod
    def _concurrent_pages(
        key: str, fetchers: Sequence[Callable[[int], Any]], pool: Executor
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(collection index, item) of every item of several collections: their first pages,
        fetched at once, tell each one's ``total_items``; every offset after them is fetched
        on ``pool``, each collection's in order. The number of pages is fixed by those first
        totals, so a server ignoring ``offset`` cannot make it loop.

        A collection's later pages are asked for as soon as its own first page is in (a
        slower first page of another one does not hold them up: 40 ms of a read-back of
        16 pages, measured), and a page is asked for whenever one is taken, keeping at most
        ``PAGES_AT_ONCE`` fetched or on the way (bounded: pages held in memory) rather
        than waiting for a whole wave of them to be taken."""
        firsts = {pool.submit(fetch, 0): index for index, fetch in enumerate(fetchers)}
        waiting: deque[tuple[int, int]] = deque()  # (collection, offset) still to ask for
        asked: deque[tuple[int, Future[Any]]] = deque()

        def ask() -> None:
            while waiting and len(asked) < PAGES_AT_ONCE:
                index, offset = waiting.popleft()
                asked.append((index, pool.submit(fetchers[index], offset)))

        try:
            for done in as_completed(firsts):
                index, first = firsts[done], done.result()
                items = first.get(key) if isinstance(first, Mapping) else None
                total = first.get("total_items") if isinstance(first, Mapping) else None
                if isinstance(total, int) and items and total > len(items):
                    waiting.extend((index, offset) for offset in range(PAGE, total, PAGE))
                    ask()
                yield from ((index, item) for item in items or [])
            while asked:
                index, future = asked.popleft()
                page = future.result()
                ask()
                found = (page.get(key) or []) if isinstance(page, Mapping) else []
                yield from ((index, item) for item in found)
        finally:  # left part-way (closed, or a page failed): calls not yet started are dropped
            for future in [*firsts, *(f for _, f in asked)]:
                future.cancel()

    def archive_member(self, list_id: str, subscriber_hash: str) -> None:
        call(self.lists.delete_list_member, list_id, subscriber_hash)

    def delete_member_permanently(self, list_id: str, subscriber_hash: str) -> None:
        call(self.lists.delete_list_member_permanent, list_id, subscriber_hash)

    @staticmethod
    def _pages(key: str, fetch: Callable[[int], Any]) -> Iterator[dict[str, Any]]:
        """Every item of a collection, a page of ``count`` at a time, ``offset`` advancing
        until ``total_items``; a server ignoring ``offset`` is caught, not read for ever."""
        paginator = OffsetPaginator(records=at(key), total=at("total_items"))
        following: NextPage | None = NextPage(paginator.first())
        while following is not None:
            page = fetch(int(following.params["offset"]))
            yield from (page.get(key) or []) if isinstance(page, Mapping) else []
            following = paginator.next(Page.of_document(page))
