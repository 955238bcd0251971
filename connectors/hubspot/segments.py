"""Segments as options of one multiple-checkbox contact property, grown as they appear.

A contact's segments are the value of ``segments_property`` (``crm-vip;crm-new``), and
HubSpot refuses a value that is not one of the property's options, so every option a
batch needs is added before the batch is sent. An update replaces the property's whole
option list, so the options are read again just before each update and only the missing
ones are appended: options somebody added in HubSpot meanwhile stay, and so does their
order. Options are only ever added here, never removed: a segment that stops being used
leaves an option nobody holds, which is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from connectors.hubspot.client import HubSpotApi
from connectors.hubspot.properties import Existing, option


class SegmentOptions:
    """The option values of the segments property; thread-safe."""

    def __init__(self, api: HubSpotApi, name: str) -> None:
        self._api = api
        self.name = name
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def know(self, values: Iterable[str]) -> None:
        """Options the property already has (``prepare`` read them)."""
        with self._lock:
            self._known.update(values)

    def ensure(self, values: Iterable[str]) -> None:
        """Adds the options among ``values`` the property lacks, in one update."""
        wanted = set(values)
        with self._lock:
            if wanted <= self._known:
                return
            found = Existing.of(self._api.property(self.name))
            have = set(found.values())
            missing = sorted(wanted - have)
            if missing:
                start = len(found.options)
                added = tuple(option(v, start + i) for i, v in enumerate(missing))
                self._api.update_property(self.name, {"options": [*found.options, *added]})
            self._known.update(have, missing)
