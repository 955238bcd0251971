"""The REST source's configuration model: one declarative description of a JSON API.

A ``preset`` (see ``presets.py``) supplies a whole platform's streams, pagination and
field mapping; every key the operator writes is merged over it, so overriding one field's
path or the page size never means copying the preset. Secrets are ``SecretStr`` (the core
has already substituted ``${ENV_VAR}`` references). Every key is described in
``docs/rest-source.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.http import HttpOptions
from connectors.rest.presets import apply_preset
from crmsync.contract import ConnectorConfig
from crmsync.normalize import ZoneName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- authentication -------------------------------------------------------------------


class NoAuth(_Strict):
    type: Literal["none"] = Field(description="No authentication (a public or proxied API).")


class ApiKeyAuthConfig(_Strict):
    type: Literal["api_key"] = Field(description="An API key in a header or query parameter.")
    key: SecretStr = Field(description="The API key; use ${ENV_VAR} to keep it out of the file.")
    header: str = Field(default="X-API-Key", description="Header that carries the key.")
    prefix: str = Field(default="", description="Text before the key, e.g. 'Token '.")
    query: str = Field(
        default="", description="Send the key as this query parameter instead of a header."
    )


class BearerAuthConfig(_Strict):
    type: Literal["bearer"] = Field(description="A static bearer token.")
    token: SecretStr = Field(description="The access token, sent as 'Authorization: Bearer'.")


class BasicAuthConfig(_Strict):
    type: Literal["basic"] = Field(description="HTTP basic auth (WooCommerce consumer key/secret).")
    username: SecretStr = Field(description="User name or consumer key.")
    password: SecretStr = Field(description="Password or consumer secret.")


class OAuth2AuthConfig(_Strict):
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


class PagePagination(_Strict):
    type: Literal["page"] = Field(description="Page numbers: ?page=1, 2, 3 ...")
    param: str = Field(default="page", description="Query parameter holding the page number.")
    start: int = Field(default=1, ge=0, description="Number of the first page.")
    total_pages_header: str | None = Field(
        default=None, description="Response header with the page count (e.g. X-WP-TotalPages)."
    )


class OffsetPagination(_Strict):
    type: Literal["offset"] = Field(description="Offsets: ?offset=0, 100, 200 ...")
    param: str = Field(default="offset", description="Query parameter holding the offset.")
    total_path: str | None = Field(
        default=None, description="Dotted path in the body to the total number of records."
    )


class CursorPagination(_Strict):
    type: Literal["cursor"] = Field(description="A cursor from the body sent back as a parameter.")
    cursor_path: str = Field(description="Dotted path in the body to the next cursor.")
    param: str = Field(description="Query parameter that carries the cursor.")
    has_more_path: str | None = Field(
        default=None, description="Dotted path to a boolean that is false on the last page."
    )


class LinkHeaderPagination(_Strict):
    type: Literal["link_header"] = Field(description='The Link header\'s rel="next" URL.')
    rel: str = Field(default="next", description="The link relation to follow.")


class NextUrlPagination(_Strict):
    type: Literal["next_url"] = Field(description="A next-page URL in the body.")
    next_url_path: str = Field(description="Dotted path in the body to the next page's URL.")


class NoPagination(_Strict):
    type: Literal["none"] = Field(description="One response holds the whole collection.")


PaginationConfig = Annotated[
    PagePagination
    | OffsetPagination
    | CursorPagination
    | LinkHeaderPagination
    | NextUrlPagination
    | NoPagination,
    Field(discriminator="type"),
]


# --- mapping --------------------------------------------------------------------------


class FieldSpec(_Strict):
    """How one canonical field is read from a JSON record; a plain string is its path.

    Taking the string here (rather than a ``str | FieldSpec`` union) keeps a mistake in a
    field's table reported once, under its own key, not once per union member.
    """

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    path: str | list[str] = Field(
        default="",
        description="Dotted path (or list of paths: the first non-empty wins); '' = unmapped.",
    )
    default: str | int | float | bool | None = Field(
        default=None, description="Value used when the path finds nothing."
    )
    map: dict[str, str] = Field(
        default_factory=dict, description="Translate raw values first, e.g. on-hold -> pending."
    )
    null_if: list[str] = Field(
        default_factory=list, description="Raw values that mean 'none' (e.g. customer id 0)."
    )
    timezone: ZoneName | None = Field(
        default=None, description="Zone of naive date/times at this path (e.g. UTC for *_gmt)."
    )
    format: str | None = Field(
        default=None, description="strptime format of dates at this path (else ISO 8601/epoch)."
    )
    sum: str | None = Field(
        default=None, description="Path holds a list: sum this dotted path over its items."
    )
    minus: str | None = Field(
        default=None, description="Subtract the amount at this path (e.g. subtotal - total)."
    )
    per: str | None = Field(
        default=None, description="Divide the amount by the number at this path (per unit)."
    )
    abs: bool = Field(default=False, description="Take the absolute value of an amount.")


FieldValue = FieldSpec  # written as a dotted path, or a table


class ItemsConfig(_Strict):
    """Nested rows of a record: an order's lines or a cart's items."""

    path: str = Field(description="Dotted path in the record to the list of rows.")
    fields: dict[str, FieldValue] = Field(
        default_factory=dict, description="Canonical row field -> path or field spec."
    )


class StreamConfig(_Strict):
    """One collection endpoint and how its JSON becomes canonical records."""

    enabled: bool = Field(default=True, description="Set false to skip a preset's stream.")
    path: str = Field(description="Endpoint path relative to base_url, e.g. /wp-json/wc/v3/orders.")
    records_path: str = Field(
        default="", description="Dotted path to the list of records in the body; '' = the body."
    )
    pagination: PaginationConfig = Field(
        default_factory=lambda: PagePagination(type="page"),
        description="How to reach the next page.",
    )
    page_size_param: str | None = Field(
        default=None, description="Query parameter for the page size (e.g. per_page, limit)."
    )
    page_size: int = Field(default=100, ge=1, description="Records asked for per page.")
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra query parameters sent on every request."
    )
    incremental_param: str | None = Field(
        default=None,
        description="Query parameter for 'updated after'; unset = full read, filtered locally.",
    )
    incremental_format: Literal["iso8601", "epoch", "epoch_ms", "strftime"] = Field(
        default="iso8601", description="How the 'updated after' time is written."
    )
    incremental_strftime: str = Field(
        default="%Y-%m-%dT%H:%M:%S",
        description="strftime pattern (in UTC) when incremental_format is strftime.",
    )
    fields: dict[str, FieldValue] = Field(
        default_factory=dict, description="Canonical field -> dotted path or field spec."
    )
    lines: ItemsConfig | None = Field(default=None, description="Order lines (orders only).")
    items: ItemsConfig | None = Field(default=None, description="Cart items (carts only).")


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
    phone_region: str | None = Field(
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
        from connectors.rest.mapping import mapping_issues  # mapping builds on this module

        issues = mapping_issues(self.streams.items())
        if issues:
            raise ValueError("; ".join(str(issue) for issue in issues))
        return self
