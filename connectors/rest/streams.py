"""How one REST stream is read: its endpoint, paging and the paths of its fields.

Kept apart from ``config`` (the connector's whole config model) so the source builds on
these models without importing the config that validates with it. Field specs are the
shared record-mapping language's (``connectors.records``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.records import (
    Builder,
    FieldSpec,
    MappingContext,
    MappingKeys,
    RowsSpec,
    compile_stream,
)
from crmsync.errors import ConfigError, ConfigIssue
from crmsync.records import Stream


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
    total_header: str | None = Field(
        default=None,
        description="Response header with the number of records (e.g. X-WP-Total, X-Total); "
        "a total that moves during a read makes the source read the listing again.",
    )
    total_path: str | None = Field(
        default=None, description="Dotted path in the body to the total number of records."
    )


class OffsetPagination(StrictModel):
    type: Literal["offset"] = Field(description="Offsets: ?offset=0, 100, 200 ...")
    param: str = Field(default="offset", description="Query parameter holding the offset.")
    total_path: str | None = Field(
        default=None, description="Dotted path in the body to the total number of records."
    )
    total_header: str | None = Field(
        default=None,
        description="Response header with the number of records (e.g. X-Total-Count); "
        "a total that moves during a read makes the source read the listing again.",
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


# --- mapping: the shared record-mapping language (connectors.records) ----------------

ItemsConfig = RowsSpec  # an order's lines or a cart's items: { path, fields }


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
    order: Literal["unknown", "id", "updated_at", "updated_at_desc"] = Field(
        default="unknown",
        description="How the API sorts the listing: 'id' (or any key a change keeps), "
        "'updated_at' (oldest change first), 'updated_at_desc', or 'unknown'. Offset and "
        "page-number reads of any order but 'id' are re-read when records move under them.",
    )
    max_rereads: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Re-reads of a listing that moved under the read before the stream "
        "fails with its cursor left where it was.",
    )
    fields: dict[str, FieldSpec] = Field(
        default_factory=dict,
        description="Canonical field -> path or field spec (docs/rest-source.md, Mapping).",
    )
    lines: ItemsConfig | None = Field(default=None, description="Order lines (orders only).")
    items: ItemsConfig | None = Field(default=None, description="Cart items (carts only).")


def compile_mapping(
    stream: Stream, config: StreamConfig, context: MappingContext, key: str
) -> Builder:
    """The stream's record builder; ``key`` is its table (``sources.<name>.streams.<stream>``).

    Raises one ``ConfigError`` with every mapping problem, each under its key.
    """
    rows_name = {Stream.ORDERS: "lines", Stream.CARTS: "items"}.get(stream)
    issues = [
        ConfigIssue(f"{key}.{name}", f"not used by the {stream} stream")
        for name in ("lines", "items")
        if name != rows_name and getattr(config, name) is not None
    ]
    rows = getattr(config, rows_name) if rows_name else None
    try:
        builder = compile_stream(
            stream,
            config.fields,
            rows,
            keys=MappingKeys.nested(key, rows_name or "lines"),
            context=context,
        )
    except ConfigError as exc:
        issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return builder
