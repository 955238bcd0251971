"""HTTP settings every connector embeds in its own config, validated with the rest of it.

They live here, not in each connector, so that timeouts, retries and rate budgets mean the
same thing (and are documented once, in ``docs/http.md``) for every vendor. A connector's
config holds an ``HttpOptions`` as its ``http`` table and turns it into the seam's
``HttpSettings`` with ``HttpOptions.settings``, adding what the connector alone knows: the
base URL, its default timeout and its vendor's connection cap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_TIMEOUT = 30.0  # seconds; a connector whose vendor is slower passes its own
SHARED_SCHEMES = ("redis", "rediss", "unix")  # what a shared rate budget may live at


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
    """The per-account budget shared by every client in the process for one vendor account
    (with ``shared``, by every process on every machine: ``connectors.http.shared_budget``)."""

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
    shared: SecretStr | None = Field(
        default=None,
        description=(
            "URL of a Redis server (redis://host:6379/1, rediss:// for TLS, unix:///path) "
            "holding this account's budget for every process on every machine that talks "
            "to it; unset: the budget is this process's own. Every process of the account "
            "must set the same URL. A password belongs in ${VAR}."
        ),
    )
    shared_lease: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description=(
            "Seconds a concurrency slot of a shared budget stays taken after its process "
            "stops renewing it (a killed process gives its slots back after this)."
        ),
    )

    @field_validator("shared")
    @classmethod
    def _shared_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = value.get_secret_value().strip().partition("://")[0].lower()
        if scheme not in SHARED_SCHEMES:
            raise ValueError(
                "a shared budget is a Redis URL: redis://host:6379/1, rediss://host:6380/1 "
                "or unix:///run/redis.sock"
            )
        return SecretStr(value.get_secret_value().strip())


class HttpSettings(BaseModel):
    """Where a connector's vendor lives and how patiently it is spoken to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        description="Root URL of the vendor API; change it for a proxy or a regional host."
    )
    timeout: float = Field(
        default=DEFAULT_TIMEOUT,
        gt=0,
        description="Read, write and connection-pool timeout in seconds.",
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


class HttpOptions(BaseModel):
    """The ``http`` table of a connector's config: the seam's settings without ``base_url``,
    which each connector places (or derives) itself.

    ``timeout`` is left unset here rather than given one default, because vendors differ
    (a batch of 500 Mailchimp members takes far longer than a page of a shop's orders):
    the connector supplies its default when it builds the settings, and a table that sets
    only ``retry`` keeps that default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Read, write and connection-pool timeout in seconds; unset: the connector's "
            "default (30, or what its documentation says)."
        ),
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds allowed to open a TCP/TLS connection."
    )
    verify_tls: bool = Field(
        default=True,
        description="Verify the server's TLS certificate; switch off only for a test host.",
    )
    retry: RetrySettings = Field(
        default=RetrySettings(), description="Retry policy for 429, 5xx and timeouts."
    )
    rate: RateSettings = Field(
        default=RateSettings(), description="Client-side rate budget for the account."
    )

    def settings(
        self,
        base_url: str,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        retry: RetrySettings | None = None,
        max_concurrency: int | None = None,
    ) -> HttpSettings:
        """The seam's settings for ``base_url``.

        ``default_timeout`` applies when the table sets no timeout; ``retry`` replaces the
        configured policy (a check tries once); ``max_concurrency`` caps the configured one
        at what the vendor allows per key.
        """
        rate = self.rate
        if max_concurrency is not None and rate.max_concurrency > max_concurrency:
            rate = rate.model_copy(update={"max_concurrency": max_concurrency})
        return HttpSettings(
            base_url=base_url,
            timeout=self.timeout if self.timeout is not None else default_timeout,
            connect_timeout=self.connect_timeout,
            verify_tls=self.verify_tls,
            retry=self.retry if retry is None else retry,
            rate=rate,
        )
