"""The HTTP seam: the one place crmsync's connectors make HTTP requests.

Connectors build an ``HttpClient`` from the ``HttpSettings`` in their config and never
touch httpx's sending machinery themselves, so timeouts, retries that honour
``Retry-After``, per-account rate budgets, error classification and secret redaction
behave the same for every vendor. See ``docs/http.md``.
"""

from __future__ import annotations

from connectors.http.auth import ApiKeyAuth, BearerAuth, OAuth2ClientCredentials
from connectors.http.budget import AccountBudget, TokenBucket
from connectors.http.budgets import BUDGETS, BudgetRegistry
from connectors.http.classify import (
    Classification,
    Classifier,
    Decision,
    classify,
    classify_with,
    parse_retry_after,
    retry_after,
)
from connectors.http.client import HttpClient
from connectors.http.redact import Redactor
from connectors.http.retry import RetryPolicy
from connectors.http.settings import HttpOptions, HttpSettings, RateSettings, RetrySettings

__all__ = [
    "BUDGETS",
    "AccountBudget",
    "ApiKeyAuth",
    "BearerAuth",
    "BudgetRegistry",
    "Classification",
    "Classifier",
    "Decision",
    "HttpClient",
    "HttpOptions",
    "HttpSettings",
    "OAuth2ClientCredentials",
    "RateSettings",
    "Redactor",
    "RetryPolicy",
    "RetrySettings",
    "TokenBucket",
    "classify",
    "classify_with",
    "parse_retry_after",
    "retry_after",
]
