"""``HttpClient``: the one place crmsync's connectors send HTTP requests.

Each try takes a token from the account's rate budget and a slot from its concurrency
limit, sends the request, classifies the outcome with the (overridable) table, and acts:
success and record failures are returned for the caller to read; configuration failures
raise ``AuthError``/``ConfigError`` at once; transient ones are retried under the one
tenacity policy and raise ``TransientError`` when it gives up. Nothing that reaches a log
line or an exception message carries a secret.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from connectors.http import redact, telemetry
from connectors.http.budget import Budget
from connectors.http.budgets import BUDGETS, BudgetRegistry
from connectors.http.classify import Classification, Classifier, Decision, classify
from connectors.http.retry import Retryable, RetryPolicy, Sleep
from connectors.http.settings import HttpSettings
from connectors.http.tls import tls_context
from crmsync.errors import AuthError, ConfigError, CrmsyncError, TransientError
from crmsync.personal import mask_text

log = logging.getLogger("crmsync.http")

_AUTH_STATUSES = frozenset({401, 403})


class HttpClient:
    """One httpx.Client per instance, sharing the account's budget with every other one."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        account: str,
        auth: httpx.Auth | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
        classifier: Classifier = classify,
        transport: httpx.BaseTransport | None = None,
        sleep: Sleep = time.sleep,
        budgets: BudgetRegistry | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.account = account
        self.base_url = settings.base_url
        self._vendor = telemetry.vendor_of(account)
        self._context = telemetry.captured()  # each try runs in it: see connectors.http.telemetry
        self._classifier = classifier
        self._redactor = redact.GLOBAL
        redact.register([*secrets, *_secret_header_values(headers or {})])
        self._policy = RetryPolicy(settings.retry, sleep=sleep, rng=rng)
        self.budget: Budget = (budgets or BUDGETS).get(account, settings.rate)
        limits = settings.rate.max_concurrency
        self._client = httpx.Client(
            base_url=settings.base_url,
            auth=auth,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            limits=httpx.Limits(max_connections=limits, max_keepalive_connections=limits),
            verify=tls_context(settings.verify_tls),
            transport=transport,
            follow_redirects=True,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        classifier: Classifier | None = None,
    ) -> httpx.Response:
        """Sends with retries; returns SUCCESS/RECORD_FAILURE responses, raises otherwise."""
        request = self._client.build_request(
            method, url, params=params, json=json, content=content, headers=headers
        )
        described = f"{method.upper()} {self._redactor.url(request.url)}"
        tries = itertools.count(1)  # the try's number, for telemetry's retries
        try:
            return self._policy.call(
                lambda: self._context.copy().run(
                    self._try_once, request, described, classifier or self._classifier, next(tries)
                )
            )
        except Retryable as exc:
            verdict = exc.classification
            raise TransientError(
                f"{described} failed: {verdict.reason}",
                retry_after=verdict.retry_after,
            ) from exc.__cause__

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _try_once(
        self, request: httpx.Request, described: str, classifier: Classifier, attempt: int = 1
    ) -> httpx.Response:
        with self.budget.slot():
            # booked once the request holds a connection, so a window's start is when the
            # request leaves: booked before, a wait for a slot could send a window's first
            # call after the next window's, and the vendor would count more than it allows
            self.budget.acquire()
            started = time.perf_counter()
            try:
                response = self._client.send(request)
            except (httpx.HTTPError, TransientError) as exc:
                self._tell(request, None, attempt, time.perf_counter() - started)
                verdict = self._redacted(classifier(None, exc))
                log.debug(
                    "%s failed after %.3fs: %s",
                    mask_text(described),
                    time.perf_counter() - started,
                    verdict.reason,
                )
                self._act(verdict, None, described, exc)
                raise AssertionError("unreachable") from exc  # _act always raises here
        elapsed = time.perf_counter() - started
        self._tell(request, response.status_code, attempt, elapsed)
        self.budget.observe(response)
        verdict = self._redacted(classifier(response, None))
        if log.isEnabledFor(logging.DEBUG):
            self._log_exchange(request, response, described, elapsed)
        return self._act(verdict, response, described, None)

    def _act(
        self,
        verdict: Classification,
        response: httpx.Response | None,
        described: str,
        error: BaseException | None,
    ) -> httpx.Response:
        decision = verdict.decision
        if decision in (Decision.SUCCESS, Decision.RECORD_FAILURE) and response is not None:
            return response
        if decision == Decision.RATE_LIMITED and verdict.retry_after:
            self.budget.pause(verdict.retry_after)
        if decision in (Decision.RETRY, Decision.RATE_LIMITED):
            raise Retryable(verdict, described) from error
        if isinstance(error, CrmsyncError) and not isinstance(error, TransientError):
            raise error  # already ours (an OAuth2 AuthError), already worded for the operator
        message = f"{described}: {verdict.reason}"
        if response is not None and response.status_code in _AUTH_STATUSES:
            raise AuthError(message) from error
        raise ConfigError(message, key="base_url", hint="check base_url and the credentials")

    def _tell(self, request: httpx.Request, status: int | None, attempt: int, secs: float) -> None:
        telemetry.emit(telemetry.Exchange(self._vendor, request.method, status, attempt, secs))

    def _redacted(self, verdict: Classification) -> Classification:
        reason = self._redactor.url(verdict.reason)
        if reason == verdict.reason:
            return verdict
        return Classification(verdict.decision, reason, verdict.retry_after)

    def _log_exchange(
        self, request: httpx.Request, response: httpx.Response, described: str, elapsed: float
    ) -> None:
        log.debug(
            "%s -> %d in %.3fs; request headers %s; request body %s; response body %s",
            mask_text(described),
            response.status_code,
            elapsed,
            self._redactor.headers(request.headers),
            redact.summary(request.content) if request.content else "-",
            redact.summary(response.content) if response.content else "-",
        )


def _secret_header_values(headers: Mapping[str, str]) -> list[str]:
    return [value for name, value in headers.items() if redact.is_secret_header(name)]
