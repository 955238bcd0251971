"""The REST source's ``pagination`` table turned into one of the shared strategies.

The strategies themselves, with their loop detection, live in ``connectors.http.pagination``
(the vendor clients page with them too); what is REST-specific is only this glue: the
stream's dotted paths (``records_path``, ``total_path``, ...) compiled with the source's
path language and handed over as getters.
"""

from __future__ import annotations

from connectors.http.pagination import (
    BodyCursorPaginator,
    LinkHeaderPaginator,
    NextPage,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PaginationLoopError,
    Paginator,
    SinglePage,
    body,
)
from connectors.records.paths import compile_path
from connectors.rest.streams import (
    CursorPagination,
    LinkHeaderPagination,
    NextUrlPagination,
    OffsetPagination,
    PagePagination,
    StreamConfig,
)

__all__ = [
    "BodyCursorPaginator",
    "LinkHeaderPaginator",
    "NextPage",
    "NextUrlPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "PaginationLoopError",
    "Paginator",
    "SinglePage",
    "body",
    "build_paginator",
]


def build_paginator(config: StreamConfig) -> Paginator:
    """A fresh strategy for one read of one stream, from its ``pagination`` table."""
    pagination = config.pagination
    size = config.page_size if config.page_size_param else None
    records = compile_path(config.records_path)
    match pagination:
        case PagePagination():
            return PageNumberPaginator(
                param=pagination.param,
                start=pagination.start,
                page_size=size,
                total_pages_header=pagination.total_pages_header,
                records=records,
            )
        case OffsetPagination():
            return OffsetPaginator(
                param=pagination.param,
                page_size=size,
                total=compile_path(pagination.total_path) if pagination.total_path else None,
                records=records,
            )
        case CursorPagination():
            return BodyCursorPaginator(
                cursor=compile_path(pagination.cursor_path),
                param=pagination.param,
                has_more=(
                    compile_path(pagination.has_more_path) if pagination.has_more_path else None
                ),
            )
        case LinkHeaderPagination():
            return LinkHeaderPaginator(rel=pagination.rel)
        case NextUrlPagination():
            return NextUrlPaginator(next_url=compile_path(pagination.next_url_path))
        case _:
            return SinglePage()
