"""The ``mailchimp`` destination's configuration, validated at start-up with the rest.

The API key is a secret type from the first moment: the core substitutes
``${MAILCHIMP_API_KEY}`` before validation, and nothing here ever echoes the value. That
is also why the key's *format* is checked by a validator that raises ``ConfigError``
itself instead of ``ValueError``: pydantic would print the raw input next to a
``ValueError``, and that input holds the key.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, model_validator

from connectors.http import HttpOptions, HttpSettings
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigError

MAX_CONNECTIONS = 10  # Mailchimp allows 10 simultaneous connections per API key
MAX_BATCH = 500  # members per batch subscribe / per static-segment list, Mailchimp's cap
DEFAULT_HOST_TEMPLATE = "https://{dc}.api.mailchimp.com/3.0"
TIMEOUT = 60.0  # seconds, unless [http] says otherwise: a batch of 500 members is slow

_KEY = re.compile(r"^[A-Za-z0-9]+-(?P<dc>[a-z]+[0-9]+)$")
_DC = re.compile(r"^[a-z]+[0-9]+$")


class MailchimpConfig(ConnectorConfig):
    """One Mailchimp audience (list) fed by crmsync."""

    kind: Literal["mailchimp"] = Field("mailchimp", description="Always 'mailchimp'.")
    api_key: SecretStr = Field(
        description="Marketing API key, '<key>-<dc>'; write \"${MAILCHIMP_API_KEY}\" in the TOML."
    )
    list_id: str = Field(min_length=1, description="The audience (list) id to sync into.")
    base_url: str | None = Field(
        None,
        description="API root; by default https://<dc>.api.mailchimp.com/3.0 from the key.",
    )
    server: str | None = Field(
        None, description="Data centre (e.g. 'us6') when the key carries none or differs."
    )
    max_connections: int = Field(
        MAX_CONNECTIONS,
        ge=1,
        le=MAX_CONNECTIONS,
        description="Simultaneous requests for this key; Mailchimp allows at most 10.",
    )
    batch_size: int = Field(
        MAX_BATCH, ge=1, le=MAX_BATCH, description="Members per batch call (at most 500)."
    )
    not_subscribed: Literal["transactional", "skip"] = Field(
        "transactional",
        description=(
            "People without a recorded opt-in: add them as 'transactional' (no marketing "
            "e-mail) or 'skip' them entirely."
        ),
    )
    deletion: Literal["archive", "delete_permanent"] = Field(
        "archive",
        description="What a person deleted at the source becomes: archived or permanently deleted.",
    )
    owned_prefix_key: ClassVar[str | None] = "tag_prefix"
    tag_prefix: str = Field(
        "crm-",
        min_length=1,
        description="Tags crmsync owns start with this; no other tag is ever added or removed.",
    )
    merge_field_limit: int = Field(
        30,
        ge=1,
        description="Merge fields the audience may hold (30 on most plans, 80 on Premium).",
    )
    store_prefix: str = Field(
        "crmsync-",
        min_length=1,
        max_length=20,
        pattern=r"^[a-z0-9_-]+$",
        description=(
            "E-commerce events: each source's store id is this prefix and the source's "
            "name (e.g. 'crmsync-shop_eu')."
        ),
    )
    store_name: str | None = Field(
        None,
        min_length=1,
        description="E-commerce events: the stores' name in Mailchimp; by default the source's.",
    )
    http: HttpOptions = Field(
        default_factory=HttpOptions,
        description=(
            "Timeouts (default 60 s), retries and rate budget; rate.max_concurrency is "
            "capped by max_connections."
        ),
    )

    # the environment variable ``api_key`` was read from (``${MC_KEY}``), told by the core
    # through the validation context, so a refused key's hint names what to fix
    _api_key_variable: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _remember_variable(self, info: ValidationInfo) -> MailchimpConfig:
        context = info.context if isinstance(info.context, dict) else {}
        variables = context.get("variables") or {}
        self._api_key_variable = variables.get("api_key")
        return self

    def api_key_origin(self) -> str:
        """Where the key comes from, in words for a hint."""
        if self._api_key_variable:
            return f"the environment variable {self._api_key_variable}"
        return "api_key in the configuration"

    @model_validator(mode="after")
    def _data_centre_known(self) -> MailchimpConfig:
        if self.server is not None and not _DC.match(self.server):
            raise ConfigError(
                f"server {self.server!r} is not a data centre name",
                key="server",
                hint="use the suffix of the API key, e.g. 'us6'",
            )
        if self.base_url is None and self.server is None and key_data_centre(self.api_key) is None:
            raise ConfigError(
                "the API key has no data-centre suffix (expected '<key>-<dc>', e.g. '...-us6')",
                key="api_key",
                hint="copy the whole key from Mailchimp, or set server",
            )
        return self

    def data_centre(self) -> str | None:
        """The data centre requests go to: ``server`` if set, else the key's suffix."""
        return self.server or key_data_centre(self.api_key)

    def resolved_base_url(self) -> str:
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        dc = self.data_centre()
        if dc is None:  # the validator above makes this unreachable for a valid model
            raise ConfigError("no data centre for the base URL", key="server")
        return DEFAULT_HOST_TEMPLATE.format(dc=dc)

    def http_settings(self) -> HttpSettings:
        """The seam's settings: base URL derived, concurrency capped by max_connections."""
        return self.http.settings(
            self.resolved_base_url(), default_timeout=TIMEOUT, max_concurrency=self.max_connections
        )


def key_data_centre(api_key: SecretStr) -> str | None:
    """The data centre encoded in a key's suffix, or None when the key has none."""
    found = _KEY.match(api_key.get_secret_value().strip())
    return found.group("dc") if found else None
