"""The ``hubspot`` destination's configuration, validated at start-up with the rest.

HubSpot limits a private app per account by a rolling 10-second window and by a day
(100 per 10 s and 250,000 a day on Free and Starter; 190 and 625,000 on Professional
and Enterprise), counted over every call, so one budget covers the whole account: a
token bucket that never lets a 10-second span exceed the window. The defaults are the
lowest tier's, which are safe on every tier.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors.http import HttpOptions, HttpSettings, RateSettings
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigError

BASE_URL = "https://api.hubapi.com"
TIMEOUT = 60.0  # seconds, unless [http] says otherwise: a batch of 100 contacts takes a while
MAX_BATCH = 100  # inputs per batch upsert, read or archive call
WINDOW_SECONDS = 10  # HubSpot's rate window
BURST = 10  # requests the bucket lets out back to back
# HubSpot's internal names: a lower-case letter, then lower-case letters, digits and "_"
INTERNAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


class RateLimits(BaseModel):
    """The account's API limits for a private app, as its HubSpot tier states them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_ten_seconds: int = Field(
        100,
        ge=2 * BURST,
        description=(
            "Requests per rolling 10 seconds (100 Free/Starter, 190 Professional/Enterprise)."
        ),
    )
    daily: int = Field(
        250_000,
        ge=1,
        description="Requests per day (250,000 Free/Starter, 625,000 Professional/Enterprise).",
    )

    def rate(self, max_concurrency: int) -> RateSettings:
        """A bucket of ``BURST`` tokens refilled so that no 10-second span holds more than
        ``per_ten_seconds`` requests: BURST + 10 s x rate = per_ten_seconds."""
        return RateSettings(
            requests_per_second=(self.per_ten_seconds - BURST) / WINDOW_SECONDS,
            burst=BURST,
            max_concurrency=max_concurrency,
        )


class HubSpotConfig(ConnectorConfig):
    """One HubSpot account fed by crmsync, through a private app's access token."""

    kind: Literal["hubspot"] = Field("hubspot", description="Always 'hubspot'.")
    access_token: SecretStr = Field(
        description='The private app\'s access token; write "${HUBSPOT_ACCESS_TOKEN}" in the TOML.'
    )
    base_url: str = Field(BASE_URL, description="API root; change it for a proxy or a test host.")
    property_group: str = Field(
        "crmsync",
        description="The contact property group crmsync creates its properties in.",
    )
    owned_prefix_key: ClassVar[str | None] = "segment_prefix"
    segment_prefix: str = Field(
        "crm-",
        min_length=1,
        description=(
            "Segment options crmsync owns start with this; it adds only such options to the "
            "segments property and never removes any (options added in HubSpot stay)."
        ),
    )
    segments_property: str = Field(
        "crmsync_segments",
        description=(
            "The multiple-checkbox contact property that holds a contact's segments; crmsync "
            "writes its whole value, so keep hand-picked values in a property of your own."
        ),
    )
    batch_size: int = Field(
        MAX_BATCH, ge=1, le=MAX_BATCH, description="Contacts per batch call (HubSpot allows 100)."
    )
    rate_limits: RateLimits = Field(
        default_factory=RateLimits, description="The account's limits; the client stays within."
    )
    http: HttpOptions = Field(
        default_factory=HttpOptions,
        description=(
            "Timeouts (default 60 s), retries and rate.max_concurrency (requests in flight); "
            "a rate.requests_per_second lowers the budget further."
        ),
    )

    @field_validator("access_token")
    @classmethod
    def _token_given(cls, value: SecretStr) -> SecretStr:
        # ConfigError, not ValueError: pydantic would print the input, which is the token
        if not value.get_secret_value().strip():
            raise ConfigError(
                "access_token is empty",
                key="access_token",
                hint='set it to "${HUBSPOT_ACCESS_TOKEN}" and export that variable',
            )
        return value

    @field_validator("property_group", "segments_property")
    @classmethod
    def _internal_name(cls, value: str) -> str:
        if not INTERNAL_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a HubSpot internal name: a lower-case letter, then "
                "lower-case letters, digits or '_' (at most 100)"
            )
        return value

    @field_validator("segment_prefix")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        if ";" in value:
            raise ValueError("';' separates the values of a multiple-checkbox property")
        return value

    def http_settings(self) -> HttpSettings:
        """The seam's settings, with the account's rate budget."""
        settings = self.http.settings(self.base_url.rstrip("/"), default_timeout=TIMEOUT)
        rate = self.rate_limits.rate(self.http.rate.max_concurrency)
        ceiling = self.http.rate.requests_per_second
        if ceiling is not None and ceiling < (rate.requests_per_second or ceiling):
            rate = rate.model_copy(update={"requests_per_second": ceiling})
        return settings.model_copy(update={"rate": rate})
