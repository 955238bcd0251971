"""The ``klaviyo`` destination's configuration, validated at start-up with the rest.

Klaviyo limits each endpoint on its own (a burst per second and a steady rate per minute,
plus 150 new lists a day), so the rate budget is configured per endpoint group and each
group gets its own budget in the HTTP seam: a throttled list creation never slows the
profile imports down. The defaults are the limits the API reference (revision
2026-07-15) documents for each operation.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors.http import HttpOptions, HttpSettings
from connectors.http.budget import Budget
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigError
from crmsync.events import EventKind

REVISION = "2026-07-15"
BASE_URL = "https://a.klaviyo.com"
TIMEOUT = 60.0  # seconds, unless [http] says otherwise: a 5 MB import job takes a while
MAX_JOB_PROFILES = 10_000  # profiles per bulk import job
MAX_JOB_BYTES = 5 * 1024 * 1024  # one bulk import request
MAX_PROFILE_BYTES = 100 * 1024  # one profile, in a job or alone
MAX_SUBSCRIBE = 1_000  # profiles per subscription bulk create job
MAX_UNSUBSCRIBE = 100  # profiles per subscription bulk delete job
MAX_SUPPRESS = 100  # e-mail addresses per suppression bulk create job
MAX_LIST_IDS = 1_000  # profile ids per list relationship call
MAX_EVENTS = 1_000  # events per bulk create events call
MAX_EVENT_BYTES = 5 * 1024 * 1024  # one bulk create events request
MAX_METRIC_NAME = 127  # Klaviyo: a metric name is less than 128 characters
LIST_CREATES_PER_DAY = 150
# seconds added to Klaviyo's windows for the network's jitter: a try booked as the one
# ``burst`` (or ``steady``) before it ages out must arrive after it has, at Klaviyo
BURST_MARGIN = 0.1
STEADY_MARGIN = 0.25

_REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9_-]+)?$")
Group = Literal[
    "profiles", "import_jobs", "subscriptions", "lists", "list_create", "list_members", "events"
]
GROUPS: tuple[Group, ...] = (
    "profiles",
    "import_jobs",
    "subscriptions",
    "lists",
    "list_create",
    "list_members",
    "events",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointLimit(_Strict):
    """One endpoint group's limits, as Klaviyo states them: per second and per minute."""

    burst: int = Field(ge=1, description="Requests allowed per second (Klaviyo's burst window).")
    steady: int = Field(ge=1, description="Requests allowed per minute (Klaviyo's steady window).")

    def keep(self, budget: Budget) -> None:
        """Has the seam's budget keep both windows: the burst as a rolling window of a
        second (it resets too often for its end to be worth learning), the steady minute
        as Klaviyo's fixed window, whose resets its answers tell (``keep_fixed_window``):
        a long run goes at the steady rate itself, with bursts of ``burst`` a second."""
        budget.keep_window(self.burst, 1.0 + BURST_MARGIN)
        budget.keep_fixed_window(self.steady, 60.0, STEADY_MARGIN)


class RateLimits(_Strict):
    """Client-side budgets per endpoint group; the defaults are Klaviyo's documented tiers."""

    profiles: EndpointLimit = Field(
        EndpointLimit(burst=75, steady=750),
        description="GET /api/profiles and POST /api/profile-import (75/s, 750/m).",
    )
    import_jobs: EndpointLimit = Field(
        EndpointLimit(burst=10, steady=150),
        description="Bulk profile import jobs: create, poll, errors, profiles (10/s, 150/m).",
    )
    subscriptions: EndpointLimit = Field(
        EndpointLimit(burst=75, steady=750),
        description=(
            "Subscribe, unsubscribe and suppression bulk jobs, and suppression job polls "
            "(75/s, 750/m)."
        ),
    )
    lists: EndpointLimit = Field(
        EndpointLimit(burst=75, steady=750), description="GET /api/lists (75/s, 750/m)."
    )
    list_create: EndpointLimit = Field(
        EndpointLimit(burst=10, steady=150), description="POST /api/lists (10/s, 150/m)."
    )
    list_members: EndpointLimit = Field(
        EndpointLimit(burst=10, steady=150),
        description="Adding and removing list members (10/s, 150/m).",
    )
    events: EndpointLimit = Field(
        EndpointLimit(burst=10, steady=150),
        description="POST /api/event-bulk-create-jobs (10/s, 150/m).",
    )
    list_creates_per_day: int = Field(
        LIST_CREATES_PER_DAY,
        ge=1,
        description="Lists Klaviyo lets an account create per day; check() warns near it.",
    )


class JobLimits(_Strict):
    """How changes are cut into Klaviyo's jobs and calls; each at most Klaviyo's own cap."""

    profiles_per_job: int = Field(
        MAX_JOB_PROFILES, ge=1, le=MAX_JOB_PROFILES, description="Profiles per bulk import job."
    )
    bytes_per_job: int = Field(
        MAX_JOB_BYTES,
        ge=4096,
        le=MAX_JOB_BYTES,
        description="Request size of one bulk import job, in bytes (Klaviyo allows 5 MB).",
    )
    bytes_per_profile: int = Field(
        MAX_PROFILE_BYTES,
        ge=1024,
        le=MAX_PROFILE_BYTES,
        description="Largest profile sent, in bytes; a larger one is rejected (100 KB).",
    )
    single_import_below: int = Field(
        10,
        ge=0,
        le=100,
        description=(
            "Pushes with fewer upserts than this import each profile on its own "
            "(POST /api/profile-import) and answer at once instead of starting a job."
        ),
    )
    subscribe_batch: int = Field(
        MAX_SUBSCRIBE, ge=1, le=MAX_SUBSCRIBE, description="Profiles per subscribe job."
    )
    unsubscribe_batch: int = Field(
        MAX_UNSUBSCRIBE, ge=1, le=MAX_UNSUBSCRIBE, description="Profiles per unsubscribe job."
    )
    suppress_batch: int = Field(
        MAX_SUPPRESS,
        ge=1,
        le=MAX_SUPPRESS,
        description="E-mail addresses per suppression job (people deleted at the source).",
    )
    list_batch: int = Field(
        MAX_LIST_IDS, ge=1, le=MAX_LIST_IDS, description="Profile ids per list member call."
    )
    events_per_call: int = Field(
        MAX_EVENTS, ge=1, le=MAX_EVENTS, description="Events per bulk create events call."
    )
    bytes_per_event_call: int = Field(
        MAX_EVENT_BYTES,
        ge=4096,
        le=MAX_EVENT_BYTES,
        description="Request size of one bulk create events call, in bytes (Klaviyo allows 5 MB).",
    )


def _metric(default: str, what: str) -> Any:
    return Field(default, max_length=MAX_METRIC_NAME, description=f"Metric for {what}.")


class EventNames(_Strict):
    """The metric each kind of event is sent under; "" sends that kind nowhere. The
    defaults are Klaviyo's standard e-commerce metrics, which its flow templates and
    benchmarks expect."""

    placed_order: str = _metric("Placed Order", "an order counted for the first time")
    ordered_product: str = _metric("Ordered Product", "each line of a placed order")
    fulfilled_order: str = _metric("Fulfilled Order", "an order fulfilled or delivered")
    cancelled_order: str = _metric("Cancelled Order", "a cancelled order")
    refunded_order: str = _metric("Refunded Order", "a refund, whole or part")
    started_checkout: str = _metric("Started Checkout", "a cart open past the abandonment time")

    def mapping(self) -> dict[EventKind, str]:
        """Kind -> metric name, for the kinds that are sent."""
        names = {EventKind(kind): str(name).strip() for kind, name in self.model_dump().items()}
        return {kind: name for kind, name in names.items() if name}


class KlaviyoConfig(ConnectorConfig):
    """One Klaviyo account fed by crmsync."""

    kind: Literal["klaviyo"] = Field("klaviyo", description="Always 'klaviyo'.")
    api_key: SecretStr = Field(
        description='Private API key (pk_...); write "${KLAVIYO_API_KEY}" in the TOML.'
    )
    revision: str = Field(REVISION, description="API revision sent with every request.")
    base_url: str = Field(BASE_URL, description="API root; change it for a proxy or a test host.")
    owned_prefix_key: ClassVar[str | None] = "list_prefix"
    list_prefix: str = Field(
        "crm-",
        min_length=1,
        description="Lists crmsync owns start with this; no other list is ever touched.",
    )
    segments_property: str | None = Field(
        None,
        min_length=1,
        description="Also write the person's list names to this profile property (optional).",
    )
    sms: bool = Field(False, description="Manage SMS consent too (for people with a phone number).")
    historical_import: bool = Field(
        False,
        description=(
            "Subscribe with the recorded consent time (historical_import): no double opt-in "
            "mail and no 'added to list' flows; for backfills of consent collected earlier."
        ),
    )
    jobs: JobLimits = Field(default_factory=JobLimits, description="Job and call sizes.")
    events: EventNames = Field(
        default_factory=EventNames,
        description=(
            "The metric name per kind of e-commerce event (Klaviyo's standard names by "
            'default); a kind set to "" is not sent.'
        ),
    )
    rate_limits: RateLimits = Field(
        default_factory=RateLimits, description="Client-side budgets per endpoint group."
    )
    http: HttpOptions = Field(
        default_factory=HttpOptions,
        description=(
            "Timeouts (default 60 s), retries and rate.max_concurrency (requests in flight per "
            "endpoint group); a rate.requests_per_second lowers every group's budget."
        ),
    )

    @field_validator("api_key")
    @classmethod
    def _key_given(cls, value: SecretStr) -> SecretStr:
        # ConfigError, not ValueError: pydantic would print the input, which is the key
        if not value.get_secret_value().strip():
            raise ConfigError(
                "api_key is empty",
                key="api_key",
                hint='set it to "${KLAVIYO_API_KEY}" and export that variable',
            )
        return value

    @field_validator("revision")
    @classmethod
    def _revision_format(cls, value: str) -> str:
        if not _REVISION.match(value):
            raise ConfigError(
                f"revision {value!r} is not YYYY-MM-DD[.suffix]",
                key="revision",
                hint=f"use a Klaviyo API revision such as {REVISION!r}",
            )
        return value

    @field_validator("segments_property")
    @classmethod
    def _property_name(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("$") or "." in value):
            raise ConfigError(
                f"segments_property {value!r} cannot start with '$' or contain '.'",
                key="segments_property",
                hint="'$' names are Klaviyo's own; use a plain name such as 'crm_segments'",
            )
        return value

    def http_settings(self, group: Group) -> HttpSettings:
        """The seam's settings for one endpoint group, with that group's own rate budget."""
        retry = None
        if group == "list_create":
            # creating a list is not idempotent: the destination looks for the list by name
            # before it tries again, so the seam tries once
            retry = self.http.retry.model_copy(update={"attempts": 1})
        settings = self.http.settings(
            self.base_url.rstrip("/"), default_timeout=TIMEOUT, retry=retry
        )
        # the group's own windows are kept by its budget (``EndpointLimit.windows``); a
        # ``rate.requests_per_second`` of ``[http]`` adds a token bucket that slows it more
        limit: EndpointLimit = getattr(self.rate_limits, group)
        rate = self.http.rate.model_copy(update={"burst": min(limit.burst, self.http.rate.burst)})
        return settings.model_copy(update={"rate": rate})

    def concurrency(self) -> int:
        """Threads a push uses: as many as one endpoint group may have in flight."""
        return self.http.rate.max_concurrency
