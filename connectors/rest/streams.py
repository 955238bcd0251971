"""How one REST stream is read: its endpoint, paging and the paths of its fields.

Kept apart from ``config`` (the connector's whole config model) so the record mapping
(``mapping``, ``convert``) builds on these models without importing the config that
validates with it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crmsync.normalize import ZoneName


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- authentication -------------------------------------------------------------------


class PagePagination(StrictModel):
    type: Literal["page"] = Field(description="Page numbers: ?page=1, 2, 3 ...")
    param: str = Field(default="page", description="Query parameter holding the page number.")
    start: int = Field(default=1, ge=0, description="Number of the first page.")
    total_pages_header: str | None = Field(
        default=None, description="Response header with the page count (e.g. X-WP-TotalPages)."
    )


class OffsetPagination(StrictModel):
    type: Literal["offset"] = Field(description="Offsets: ?offset=0, 100, 200 ...")
    param: str = Field(default="offset", description="Query parameter holding the offset.")
    total_path: str | None = Field(
        default=None, description="Dotted path in the body to the total number of records."
    )


class CursorPagination(StrictModel):
    type: Literal["cursor"] = Field(description="A cursor from the body sent back as a parameter.")
    cursor_path: str = Field(description="Dotted path in the body to the next cursor.")
    param: str = Field(description="Query parameter that carries the cursor.")
    has_more_path: str | None = Field(
        default=None, description="Dotted path to a boolean that is false on the last page."
    )


class LinkHeaderPagination(StrictModel):
    type: Literal["link_header"] = Field(description='The Link header\'s rel="next" URL.')
    rel: str = Field(default="next", description="The link relation to follow.")


class NextUrlPagination(StrictModel):
    type: Literal["next_url"] = Field(description="A next-page URL in the body.")
    next_url_path: str = Field(description="Dotted path in the body to the next page's URL.")


class NoPagination(StrictModel):
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


class FieldSpec(StrictModel):
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


class ItemsConfig(StrictModel):
    """Nested rows of a record: an order's lines or a cart's items."""

    path: str = Field(description="Dotted path in the record to the list of rows.")
    fields: dict[str, FieldValue] = Field(
        default_factory=dict, description="Canonical row field -> path or field spec."
    )


class StreamConfig(StrictModel):
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
