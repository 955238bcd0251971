"""Classify first, then act: every response or exception becomes one frozen decision.

The table lives here and nowhere else, so every connector treats a 429, a 503, a DNS
failure or a 401 the same way; ``HttpClient`` acts on the decision in one place. A caller
that knows better for one request (``check()`` hitting the base URL, where 404 means a
wrong ``base_url`` rather than a missing record) passes an override built with
``classify_with``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import httpx

from crmsync.errors import CrmsyncError, TransientError


class Decision(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # transient: try again after a backoff
    RATE_LIMITED = "rate_limited"  # the vendor asked us to slow down; honour retry_after
    RECORD_FAILURE = "record_failure"  # this request/record is bad; the run goes on
    CONFIG_FAILURE = "config_failure"  # the operator must fix something; the run stops


@dataclass(frozen=True, slots=True)
class Classification:
    decision: Decision
    reason: str
    retry_after: float | None = None  # seconds the vendor asked us to wait, if it said


Classifier = Callable[[httpx.Response | None, BaseException | None], Classification]

_RETRY_AFTER_STATUSES = frozenset({408, 425, 429})
_LIMIT_HEADERS = ("x-ratelimit-limit", "ratelimit-limit", "x-rate-limit-limit")
_RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset")
_REMAINING_HEADERS = (
    "x-ratelimit-remaining",
    "ratelimit-remaining",
    "x-rate-limit-remaining",
    "x-hubspot-ratelimit-remaining",  # HubSpot's rolling 10-second window
)
# A rolling window's length and size (HubSpot): no reset time, since no moment frees the
# window at once; a slot frees, on average, every interval / max.
_INTERVAL_HEADER = "x-hubspot-ratelimit-interval-milliseconds"
_WINDOW_MAX_HEADER = "x-hubspot-ratelimit-max"
_DAILY_REMAINING_HEADER = "x-hubspot-ratelimit-daily-remaining"
_EPOCH_THRESHOLD = 1_000_000_000  # a reset value this large is a Unix time, not a delay

_DNS_HINTS = (
    "name or service not known",
    "nodename nor servname",
    "getaddrinfo failed",
    "temporary failure in name resolution",
    "no address associated with hostname",
    "name resolution",
)
_TLS_HINTS = ("certificate verify failed", "certificate_verify_failed", "hostname mismatch")


def classify(response: httpx.Response | None, error: BaseException | None) -> Classification:
    """The default table (see ``docs/http.md``)."""
    if error is not None:
        return _classify_error(error)
    if response is None:
        raise ValueError("classify() needs a response or an error")
    return _classify_response(response)


def classify_with(
    overrides: Mapping[int, Classification], base: Classifier = classify
) -> Classifier:
    """A classifier that answers ``overrides[status]`` for those statuses and ``base`` else."""

    def classifier(response: httpx.Response | None, error: BaseException | None) -> Classification:
        if response is not None and response.status_code in overrides:
            return overrides[response.status_code]
        return base(response, error)

    return classifier


def _classify_response(response: httpx.Response) -> Classification:
    status = response.status_code
    label = _label(response)
    if 200 <= status < 300:
        return Classification(Decision.SUCCESS, label)
    if status in _RETRY_AFTER_STATUSES:
        decision = Decision.RATE_LIMITED if status == 429 else Decision.RETRY
        wait = retry_after(response)
        return Classification(decision, f"{label}: the server asked to slow down", wait)
    if status >= 500:
        return Classification(Decision.RETRY, f"{label}: server error", retry_after(response))
    if status == 401:
        return Classification(
            Decision.CONFIG_FAILURE,
            f"{label}: authentication failed; check the API key/credentials",
        )
    if status == 403:
        return Classification(
            Decision.CONFIG_FAILURE,
            f"{label}: the credentials lack permission for this resource; "
            "grant the key the needed scopes",
        )
    if 300 <= status < 400:
        target = response.headers.get("location", "?")
        return Classification(
            Decision.CONFIG_FAILURE,
            f"{label}: unexpected redirect to {target}; check base_url",
        )
    if status == 404:
        return Classification(Decision.RECORD_FAILURE, f"{label}: not found")
    return Classification(Decision.RECORD_FAILURE, f"{label}: the server refused the request")


def _label(response: httpx.Response) -> str:
    try:
        request = response.request
    except RuntimeError:  # a bare Response built in a test has no request
        return f"HTTP {response.status_code}"
    return f"HTTP {response.status_code} from {request.method} {request.url.path}"


def _classify_error(error: BaseException) -> Classification:
    name = type(error).__name__
    if isinstance(error, TransientError):
        return Classification(Decision.RETRY, str(error), error.retry_after)
    if isinstance(error, CrmsyncError):
        return Classification(Decision.CONFIG_FAILURE, str(error))
    if _is_dns_failure(error):
        return Classification(
            Decision.CONFIG_FAILURE,
            f"cannot resolve the host name ({name}: {error}); check the base_url host",
        )
    if _is_tls_failure(error):
        return Classification(
            Decision.CONFIG_FAILURE,
            f"TLS certificate verification failed ({error}); check the base_url host "
            "and the TLS settings (verify_tls)",
        )
    if isinstance(error, httpx.TimeoutException):
        return Classification(Decision.RETRY, f"timed out ({name})")
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Classification(
            Decision.CONFIG_FAILURE, f"invalid URL ({error}); check base_url and the paths"
        )
    if isinstance(error, httpx.LocalProtocolError):
        return Classification(
            Decision.CONFIG_FAILURE,
            f"the request could not be sent ({error}); check header values such as the API key",
        )
    if isinstance(error, httpx.TransportError | httpx.DecodingError):
        return Classification(Decision.RETRY, f"connection failed ({name}: {error})")
    if isinstance(error, httpx.TooManyRedirects):
        return Classification(Decision.CONFIG_FAILURE, f"{error}; check base_url")
    return Classification(Decision.CONFIG_FAILURE, f"unexpected HTTP failure ({name}: {error})")


def _chain(error: BaseException) -> list[BaseException]:
    """The error and every cause/context behind it (libraries re-raise with ``from``)."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        pending.extend(exc for exc in (current.__cause__, current.__context__) if exc is not None)
    return seen


def _is_dns_failure(error: BaseException) -> bool:
    chain = _chain(error)
    if any(isinstance(exc, socket.gaierror) for exc in chain):
        return True
    return isinstance(error, httpx.ConnectError) and _mentions(chain, _DNS_HINTS)


def _is_tls_failure(error: BaseException) -> bool:
    chain = _chain(error)
    if any(isinstance(exc, ssl.SSLCertVerificationError) for exc in chain):
        return True
    return isinstance(error, httpx.ConnectError) and _mentions(chain, _TLS_HINTS)


def _mentions(chain: list[BaseException], hints: tuple[str, ...]) -> bool:
    text = " ".join(str(exc).casefold() for exc in chain)
    return any(hint in text for hint in hints)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or a rate-limit reset.

    HTTP dates are measured against the response's own ``Date`` header when it has one,
    so a skewed local clock cannot turn "in 30 s" into "in an hour" or "already past".
    """
    now = _server_now(response)
    value = response.headers.get("retry-after")
    if value is not None:
        parsed = parse_retry_after(value, now)
        if parsed is not None:
            return parsed
    return rate_limit_reset(response, now)


def parse_retry_after(value: str, now: datetime) -> float | None:
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def rate_limit_reset(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds until the vendor's rate-limit window resets, from the usual headers."""
    for name in _RESET_HEADERS:
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            number = float(value.strip())
        except ValueError:
            continue
        if number >= _EPOCH_THRESHOLD:
            reference = now or _server_now(response)
            return max(0.0, number - reference.timestamp())
        return max(0.0, number)
    return None


def rate_limit_limit(response: httpx.Response) -> int | None:
    """The size of the window the vendor's other rate-limit headers describe: the first
    number of ``RateLimit-Limit`` (``750`` or ``750, 75;w=1, 750;w=60``), when it says."""
    for name in _LIMIT_HEADERS:
        value = response.headers.get(name)
        if value is None:
            continue
        found = _number(value.split(",", 1)[0].split(";", 1)[0])
        if found is not None and found >= 1:
            return int(found)
    return None


def rate_limit_remaining(response: httpx.Response) -> float | None:
    """Requests left in the vendor's current window, when it says."""
    for name in _REMAINING_HEADERS:
        value = response.headers.get(name)
        if value is None:
            continue
        try:
            return float(value.strip())
        except ValueError:
            continue
    return None


def rate_limit_spacing(response: httpx.Response) -> float | None:
    """Seconds between two requests at the most a rolling window allows (its interval over
    its size), when the vendor states both: how long a full window makes the client wait
    for the next free slot if it keeps to the limit."""
    interval = _number(response.headers.get(_INTERVAL_HEADER))
    most = _number(response.headers.get(_WINDOW_MAX_HEADER))
    if interval is None or not most or most <= 0:
        return None
    return max(0.0, interval / 1000.0 / most)


def daily_remaining(response: httpx.Response) -> int | None:
    """Requests the account has left today, when the vendor says (HubSpot's private apps)."""
    value = _number(response.headers.get(_DAILY_REMAINING_HEADER))
    return None if value is None else max(0, int(value))


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _server_now(response: httpx.Response) -> datetime:
    value = response.headers.get("date")
    if value:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)
