"""The ``hubspot`` destination's configuration, validated at start-up with the rest.

HubSpot limits a private app per account by a rolling 10-second window and by a day
(100 per 10 s and 250,000 a day on Free and Starter; 190 and 625,000 on Professional
and Enterprise), counted over every call, so one budget covers the whole account. The
seam's budget keeps the window exactly (``keep_window``: a try starts once the one
``per_ten_seconds`` tries before it is 10 s old, plus a little margin for the network's
jitter), so a long run goes at the window's full rate, and keeps the day's calls
(``keep_daily``): a run stops before it would spend the ``daily_reserve``, and says when
HubSpot's day ends (midnight in the account's time zone). The defaults are the lowest
tier's, which are safe on every tier.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.http import HttpOptions, HttpSettings
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigError
from crmsync.normalize import ZoneName

BASE_URL = "https://api.hubapi.com"
TIMEOUT = 60.0  # seconds, unless [http] says otherwise: a batch of 100 contacts takes a while
MAX_BATCH = 100  # inputs per batch upsert, read or archive call
MAX_LIST_BATCH = 100_000  # record ids per list membership call
WINDOW_SECONDS = 10  # HubSpot's rate window
WINDOW_MARGIN = 0.25  # seconds added to the window, for the network's jitter
# HubSpot's internal names: a lower-case letter, then lower-case letters, digits and "_"
INTERNAL_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")


class RateLimits(BaseModel):
    """The account's API limits for a private app, as its HubSpot tier states them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_ten_seconds: int = Field(
        100,
        ge=10,
        description=(
            "Requests per rolling 10 seconds (100 Free/Starter, 190 Professional/Enterprise)."
        ),
    )
    daily: int = Field(
        250_000,
        ge=1,
        description="Requests per day (250,000 Free/Starter, 625,000 Professional/Enterprise).",
    )
    daily_reserve: int = Field(
        1_000,
        ge=0,
        description=(
            "Calls a day crmsync leaves to the account's other apps and to people: a run "
            "stops before HubSpot's count of the day's calls left falls below this."
        ),
    )
    time_zone: ZoneName = Field(
        "UTC",
        description=(
            "The HubSpot account's time zone (Settings > Account defaults), e.g. "
            "'Europe/Istanbul': its daily limit starts again at midnight there."
        ),
    )

    def day_ends(self, now: datetime) -> datetime:
        """When HubSpot's day that holds ``now`` ends: the next midnight in the account's
        time zone (aware, in that zone)."""
        local = now.astimezone(ZoneInfo(self.time_zone))
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
        return midnight.replace(tzinfo=local.tzinfo)


class HubSpotEvents(BaseModel):
    """How the store's e-commerce events are written to HubSpot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: Literal["commerce", "deals"] = Field(
        "commerce",
        description=(
            "'commerce': orders and carts as HubSpot's commerce objects with line items, "
            "associated with the contact (needs the crm.objects.orders.write, "
            "crm.objects.carts.write and crm.objects.line_items.write scopes). 'deals': "
            "orders (and, with checkout_stage, abandoned checkouts) as deals with line "
            "items, for accounts without commerce objects (needs crm.objects.deals.write, "
            "crm.objects.line_items.write and crm.schemas.deals.write)."
        ),
    )
    pipeline: str = Field(
        "default",
        min_length=1,
        description=(
            "deals: the internal id of the deal pipeline orders go to (HubSpot's first "
            "pipeline is 'default'; see Settings > Objects > Deals > Pipelines)."
        ),
    )
    won_stage: str = Field(
        "closedwon",
        min_length=1,
        description="deals: the internal id of the stage a placed order's deal is created in.",
    )
    lost_stage: str = Field(
        "closedlost",
        description=(
            "deals: the stage a cancelled or wholly refunded order's deal moves to (a stage "
            "of pipeline); '': the stage stays and only crmsync's properties change."
        ),
    )
    checkout_stage: str | None = Field(
        None,
        min_length=1,
        description=(
            "deals: the stage of an open deal an abandoned checkout becomes, e.g. a "
            "'Checkout abandoned' stage you add; unset: abandoned checkouts are not sent."
        ),
    )
    checkout_pipeline: str | None = Field(
        None,
        min_length=1,
        description="deals: the pipeline of checkout_stage (unset: pipeline).",
    )
    closed_checkout_stage: str | None = Field(
        None,
        min_length=1,
        description=(
            "deals: where a checkout's deal goes when its cart converts or expires: a stage "
            "of the checkout pipeline; unset: the deal is archived (HubSpot's recycle bin)."
        ),
    )

    @model_validator(mode="after")
    def _deal_options_need_deals(self) -> HubSpotEvents:
        stray = sorted(n for n in self.model_fields_set & DEAL_OPTIONS)
        if stray and self.objects != "deals":
            raise ValueError(
                f"{', '.join(stray)}: only for objects = 'deals'; set objects = 'deals', "
                "or remove them"
            )
        if self.checkout_stage is None:
            needless = sorted({"checkout_pipeline", "closed_checkout_stage"} & set(stray))
            if needless:
                raise ValueError(
                    f"{', '.join(needless)}: only with checkout_stage (without it no "
                    "abandoned checkout is sent as a deal); set checkout_stage, or remove them"
                )
        return self

    @property
    def checkouts_pipeline(self) -> str:
        """The pipeline of the checkouts' deals."""
        return self.checkout_pipeline or self.pipeline


# the options of deals mode, refused beside objects = "commerce"
DEAL_OPTIONS = frozenset(
    {
        "pipeline",
        "won_stage",
        "lost_stage",
        "checkout_stage",
        "checkout_pipeline",
        "closed_checkout_stage",
    }
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
    lists: bool = Field(
        False,
        description=(
            "Also keep one MANUAL contact list per segment, named like its option "
            "('crm-vip'): created when the segment appears, members moved in and out by "
            "record id. Lists whose names do not start with segment_prefix are never touched."
        ),
    )
    list_batch: int = Field(
        10_000,
        ge=1,
        le=MAX_LIST_BATCH,
        description="Record ids per list membership call (HubSpot takes up to 100,000).",
    )
    opt_out_subscriptions: tuple[str, ...] = Field(
        (),
        description=(
            "Ids of the e-mail subscription types (Settings > Marketing > Email > "
            "Subscriptions) that a platform opt-out unsubscribes the contact from; empty: "
            "platform opt-outs are not written to HubSpot. crmsync never subscribes anyone."
        ),
    )
    deletion: Literal["archive", "gdpr_delete"] = Field(
        "archive",
        description=(
            "What a person deleted or redacted at the source becomes: 'archive' (HubSpot's "
            "recycle bin, restorable for 90 days) or 'gdpr_delete' (deleted for good with "
            "their history, HubSpot's GDPR delete)."
        ),
    )
    events: HubSpotEvents = Field(
        default_factory=HubSpotEvents,
        description=(
            "How e-commerce events are written: orders and carts as commerce objects, or "
            "as deals with line items."
        ),
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
        """The seam's settings: the rolling window is kept by the budget (``keep_window``);
        a ``rate.requests_per_second`` of ``[http]`` lowers the pace further."""
        return self.http.settings(self.base_url.rstrip("/"), default_timeout=TIMEOUT)
