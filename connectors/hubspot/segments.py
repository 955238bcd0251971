"""Segments as options of one multiple-checkbox contact property, grown as they appear.

A contact's segments are the value of ``segments_property`` (``crm-vip;crm-new``), and
HubSpot refuses a value that is not one of the property's options, so every option a
batch needs is added before the batch is sent. An update replaces the property's whole
option list, so the options are read again just before each update and only the missing
ones are appended: options somebody added in HubSpot meanwhile stay, and so does their
order. Options are only ever added here, never removed: a segment that stops being used
leaves an option nobody holds, which is harmless.

HubSpot has no conditional update, so two writers (processes of another run, or a
person in HubSpot) that read the list at once may each replace it, and the later drops
what the earlier added. A run on workers adds its options once, before its pushes
(``HubSpotDestination.expect``), so its own processes never race; an upsert refused
for an option that was dropped all the same reads the options again, adds back what it
needs and is sent again (``restore``).
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

    def known(self) -> list[str]:
        """The options known to exist, sorted (read by ``prepare``, or added since)."""
        with self._lock:
            return sorted(self._known)

    def ensure(self, values: Iterable[str]) -> None:
        """Adds the options among ``values`` the property lacks, in one update."""
        self._add(set(values), fresh=False)

    def restore(self, values: Iterable[str]) -> bool:
        """Reads the options again, whatever is known, and adds those among ``values``
        the property lacks (somebody's update dropped them); True when it added any."""
        return self._add(set(values), fresh=True)

    def _add(self, wanted: set[str], *, fresh: bool) -> bool:
        with self._lock:
            if wanted <= self._known and not fresh:
                return False
            found = Existing.of(self._api.property(self.name))
            have = set(found.values())
            missing = sorted(wanted - have)
            if missing:
                start = len(found.options)
                added = tuple(option(v, start + i) for i, v in enumerate(missing))
                self._api.update_property(self.name, {"options": [*found.options, *added]})
            self._known = {*have, *missing}
            return bool(missing)
