"""The one retry policy: tenacity, built from ``RetrySettings``, honouring Retry-After.

A try that ends in RETRY or RATE_LIMITED raises ``Retryable`` carrying its classification;
the policy retries only that, waits what the vendor asked for (``retry_after``) or else an
exponential backoff with full jitter, and stops on the attempt cap, on the elapsed-time cap,
or at once when the vendor asks for a wait longer than ``max_retry_after``. The caller turns
the final ``Retryable`` into ``TransientError``.

``sleep`` and ``rng`` are injectable so tests run without real waiting.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from connectors.http.classify import Classification
from connectors.http.settings import RetrySettings
from crmsync.personal import mask_text

T = TypeVar("T")
Sleep = Callable[[float], None]

log = logging.getLogger("crmsync.http")


class Retryable(Exception):
    """One try failed in a way worth retrying; carries the classification that said so."""

    def __init__(self, classification: Classification, description: str = "") -> None:
        super().__init__(classification.reason)
        self.classification = classification
        self.description = description  # e.g. "GET https://host/path", already redacted


def _classification(state: tenacity.RetryCallState) -> Classification | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    error = outcome.exception()
    return error.classification if isinstance(error, Retryable) else None


class RetryPolicy:
    """Builds a fresh tenacity ``Retrying`` per request from one set of settings."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        sleep: Sleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._rng = rng or random.Random()

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(attempt-1))]."""
        ceiling = min(self.settings.backoff_max, self.settings.backoff_initial * 2 ** (attempt - 1))
        return self._rng.uniform(0.0, ceiling)

    def wait(self, state: tenacity.RetryCallState) -> float:
        """The vendor's Retry-After when it gave one, otherwise the jittered backoff."""
        found = _classification(state)
        if found is not None and found.retry_after is not None:
            return found.retry_after
        return self.backoff(state.attempt_number)

    def should_stop(self, state: tenacity.RetryCallState) -> bool:
        settings = self.settings
        if state.attempt_number >= settings.attempts:
            return True
        found = _classification(state)
        if found is not None and (found.retry_after or 0.0) > settings.max_retry_after:
            return True
        # Elapsed time counts slept time even when ``sleep`` is faked, hence the max().
        elapsed = max(state.seconds_since_start or 0.0, state.idle_for)
        return elapsed + state.upcoming_sleep > settings.max_elapsed

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(Retryable),
            wait=self.wait,
            stop=self.should_stop,
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    def call(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` under the policy; the last ``Retryable`` propagates when it gives up."""
        return self.retrying()(attempt)


def _log_retry(state: tenacity.RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, Retryable):
        log.warning(
            "retrying %s in %.2fs (try %d failed: %s)",
            mask_text(error.description or "request"),
            state.upcoming_sleep,
            state.attempt_number,
            error.classification.reason,
        )
