"""The REST source's configuration model: one declarative description of a JSON API.

A ``preset`` (see ``presets.py``) supplies a whole platform's streams, pagination and
field mapping; every key the operator writes is merged over it, so overriding one field's
path or the page size never means copying the preset. Secrets are ``SecretStr`` (the core
has already substituted ``${ENV_VAR}`` references). Every key is described in
``docs/rest-source.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from connectors.http import HttpOptions
from connectors.records import MappingContext
from connectors.rest.presets import apply_preset
from connectors.rest.streams import StreamConfig, StrictModel, compile_mapping
from crmsync.config import RegionCode
from crmsync.contract import ConnectorConfig
from crmsync.errors import ConfigError, ConfigIssue
from crmsync.normalize import ZoneName
from crmsync.records import Stream


class NoAuth(StrictModel):
    type: Literal["none"] = Field(description="No authentication (a public or proxied API).")


class ApiKeyAuthConfig(StrictModel):
    type: Literal["api_key"] = Field(description="An API key in a header or query parameter.")
    key: SecretStr = Field(description="The API key; use ${ENV_VAR} to keep it out of the file.")
    header: str = Field(default="X-API-Key", description="Header that carries the key.")
    prefix: str = Field(default="", description="Text before the key, e.g. 'Token '.")
    query: str = Field(
        default="", description="Send the key as this query parameter instead of a header."
    )


class BearerAuthConfig(StrictModel):
    type: Literal["bearer"] = Field(description="A static bearer token.")
    token: SecretStr = Field(description="The access token, sent as 'Authorization: Bearer'.")


class BasicAuthConfig(StrictModel):
    type: Literal["basic"] = Field(description="HTTP basic auth (WooCommerce consumer key/secret).")
    username: SecretStr = Field(description="User name or consumer key.")
    password: SecretStr = Field(description="Password or consumer secret.")


class OAuth2AuthConfig(StrictModel):
    type: Literal["oauth2"] = Field(description="OAuth2 client-credentials grant.")
    token_url: str = Field(description="The token endpoint (absolute URL).")
    client_id: str = Field(description="The OAuth2 client id.")
    client_secret: SecretStr = Field(description="The OAuth2 client secret.")
    scope: str = Field(default="", description="Space-separated scopes to request, if any.")
    credentials_in_body: bool = Field(
        default=True,
        description="Send client id/secret in the form body (true) or as basic auth (false).",
    )


AuthConfig = Annotated[
    NoAuth | ApiKeyAuthConfig | BearerAuthConfig | BasicAuthConfig | OAuth2AuthConfig,
    Field(discriminator="type"),
]


# --- pagination -----------------------------------------------------------------------


class RestConfig(ConnectorConfig):
    """``kind = "rest"``: a JSON REST API read declaratively."""

    kind: Literal["rest"] = Field(description="Always 'rest'.")
    preset: str | None = Field(
        default=None, description="A ready platform description, e.g. 'woocommerce'."
    )
    base_url: str = Field(description="The API's root URL, e.g. https://shop.example.com.")
    auth: AuthConfig = Field(
        default_factory=lambda: NoAuth(type="none"), description="How to authenticate."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers on every request (not for secrets)."
    )
    # the seam's options shared by every connector (docs/http.md); base_url sits above
    http: HttpOptions = Field(default=HttpOptions(), description="Timeouts, retries, rate budget.")
    timezone: ZoneName | None = Field(
        default=None, description="Zone of naive times in the API (default: the core's)."
    )
    phone_region: RegionCode | None = Field(
        default=None, description="Region for phone numbers without a country code."
    )
    streams: dict[Literal["customers", "orders", "carts"], StreamConfig] = Field(
        default_factory=dict, description="The collections to read, by stream name."
    )

    @model_validator(mode="before")
    @classmethod
    def _merge_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset"):
            return apply_preset(str(data["preset"]), data)
        return data

    @model_validator(mode="after")
    def _needs_a_stream(self) -> RestConfig:
        if not any(stream.enabled for stream in self.streams.values()):
            raise ValueError("no enabled stream: configure streams.customers/orders/carts")
        issues = mapping_issues(self.streams.items())
        if issues:
            raise ValueError("; ".join(str(issue) for issue in issues))
        return self


def mapping_issues(streams: Iterable[tuple[str, StreamConfig]]) -> list[ConfigIssue]:
    """Every mapping problem of the enabled streams, keyed relative to the source's table.

    Run when the config is validated, so ``crmsync check`` reports everything ``run``
    would fail on for the mapping's sake, with the rest of the configuration.
    """
    neutral = MappingContext()  # zone and region never make a mapping invalid
    issues: list[ConfigIssue] = []
    for name, config in streams:
        if config.enabled:
            try:
                compile_mapping(Stream(name), config, neutral, f"streams.{name}")
            except ConfigError as exc:
                issues.extend(exc.issues)
    return issues
