"""HTTP settings every connector embeds in its own config, validated with the rest of it.

They live here, not in each connector, so that timeouts, retries and rate budgets mean the
same thing (and are documented once, in ``docs/http.md``) for every vendor.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetrySettings(BaseModel):
    """How one request is retried when the answer says "try again later"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(
        default=6, ge=1, description="Total tries per request, the first one included."
    )
    max_elapsed: float = Field(
        default=120.0,
        gt=0,
        description="Seconds after the first try beyond which no further try is started.",
    )
    backoff_initial: float = Field(
        default=0.5,
        ge=0,
        description="Upper bound of the first wait in seconds; it doubles each try (full jitter).",
    )
    backoff_max: float = Field(
        default=30.0, ge=0, description="Largest upper bound of a backoff wait, in seconds."
    )
    max_retry_after: float = Field(
        default=300.0,
        ge=0,
        description=(
            "A Retry-After (or rate-limit reset) longer than this many seconds fails the "
            "request as transient instead of waiting; the next run tries again."
        ),
    )


class RateSettings(BaseModel):
    """The per-account budget shared by every client in the process for one vendor account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Token bucket refill rate per account; unset means no client-side limit.",
    )
    burst: int = Field(
        default=10,
        ge=1,
        description="Token bucket size: requests allowed back to back after a pause.",
    )
    max_concurrency: int = Field(
        default=10,
        ge=1,
        description="Requests in flight at once per account (and connection pool size).",
    )


class HttpSettings(BaseModel):
    """Where a connector's vendor lives and how patiently it is spoken to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        description="Root URL of the vendor API; change it for a proxy or a regional host."
    )
    timeout: float = Field(
        default=30.0, gt=0, description="Read, write and connection-pool timeout in seconds."
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to open a TCP/TLS connection."
    )
    verify_tls: bool = Field(
        default=True,
        description="Verify the server's TLS certificate; switch off only for a test host.",
    )
    retry: RetrySettings = Field(
        default=RetrySettings(), description="Retry policy for transient failures."
    )
    rate: RateSettings = Field(
        default=RateSettings(), description="Client-side rate budget for the account."
    )
