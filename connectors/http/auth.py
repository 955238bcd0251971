"""Authentication schemes as httpx ``Auth`` objects, so the seam stays the only sender.

Basic auth is ``httpx.BasicAuth``. The OAuth2 client-credentials flow fetches a token on
first use, refreshes it shortly before it expires and once more when the API answers 401
(a token revoked early), and registers every token with the redactor so it never reaches
a log line. Its failures are translated here: bad credentials become ``AuthError``, a busy
token endpoint ``TransientError`` (which the seam retries like any transient failure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from connectors.http import redact
from connectors.http.classify import Decision, classify
from crmsync.errors import AuthError, TransientError

Clock = Callable[[], float]


class ApiKeyAuth(httpx.Auth):
    """An API key sent in a header (``X-API-Key: k``, ``Authorization: Token k``) or a query."""

    def __init__(
        self, key: str, *, header: str = "X-API-Key", prefix: str = "", query: str = ""
    ) -> None:
        self._key = key
        self._header = header
        self._prefix = prefix
        self._query = query
        redact.register([key])

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._query:
            request.url = request.url.copy_merge_params({self._query: self._key})
        else:
            request.headers[self._header] = f"{self._prefix}{self._key}"
        yield request


class BearerAuth(httpx.Auth):
    """A static bearer token (a personal access token, an app's admin token)."""

    def __init__(self, token: str) -> None:
        self._token = token
        redact.register([token])

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class OAuth2ClientCredentials(httpx.Auth):
    """OAuth2 client-credentials grant with refresh on expiry and on 401. Thread safe."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str = "",
        credentials_in_body: bool = True,
        leeway: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._in_body = credentials_in_body
        self._leeway = leeway
        self._clock = clock
        self._token: str | None = None
        self._expires_at: float | None = None
        self._lock = threading.Lock()
        self.token_requests = 0  # how many tokens were fetched (observable in tests)
        redact.register([client_secret])

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        with self._lock:
            if self._token is None or self._expired():
                yield from self._fetch()
            token = self._token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        with self._lock:
            if self._token == token:  # no other thread refreshed it meanwhile
                yield from self._fetch()
            token = self._token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> object:  # type: ignore[override]
        raise NotImplementedError("crmsync's HTTP seam is synchronous")

    def _expired(self) -> bool:
        return self._expires_at is not None and self._clock() >= self._expires_at - self._leeway

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        headers: dict[str, str] = {"Accept": "application/json"}
        if self._in_body:
            form["client_id"] = self._client_id
            form["client_secret"] = self._client_secret
            return httpx.Request("POST", self._token_url, data=form, headers=headers)
        basic = httpx.BasicAuth(self._client_id, self._client_secret)
        request = httpx.Request("POST", self._token_url, data=form, headers=headers)
        return next(basic.auth_flow(request))

    def _fetch(self) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield self._token_request()
        response.read()
        self.token_requests += 1
        verdict = classify(response, None)
        if verdict.decision in (Decision.RETRY, Decision.RATE_LIMITED):
            raise TransientError(
                f"OAuth2 token endpoint is unavailable (HTTP {response.status_code})",
                retry_after=verdict.retry_after,
            )
        if verdict.decision != Decision.SUCCESS:
            raise AuthError(
                f"OAuth2 token request failed with HTTP {response.status_code}; "
                "check client_id, client_secret, scope and token_url"
            )
        try:
            body = response.json()
            token = str(body["access_token"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError(
                "OAuth2 token endpoint answered without an access_token; check token_url"
            ) from exc
        if self._token:
            redact.GLOBAL.discard(self._token)
        redact.register([token])
        self._token = token
        expires_in = body.get("expires_in")
        try:
            self._expires_at = self._clock() + float(expires_in) if expires_in else None
        except (TypeError, ValueError):
            self._expires_at = None
