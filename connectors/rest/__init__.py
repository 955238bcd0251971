"""The declarative JSON REST source (``kind = "rest"``); see ``docs/rest-source.md``."""

from __future__ import annotations

from connectors.rest.config import RestConfig
from connectors.rest.pagination import (
    BodyCursorPaginator,
    LinkHeaderPaginator,
    NextPage,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    PaginationLoopError,
    Paginator,
)
from connectors.rest.presets import PRESETS
from connectors.rest.shifts import ListingMovedError
from connectors.rest.source import RestSource

__all__ = [
    "PRESETS",
    "BodyCursorPaginator",
    "LinkHeaderPaginator",
    "ListingMovedError",
    "NextPage",
    "NextUrlPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "PaginationLoopError",
    "Paginator",
    "RestConfig",
    "RestSource",
]
