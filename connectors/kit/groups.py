"""The groups one destination keeps, by name: find them, create the missing ones, once.

A membership names its group; the vendor's calls need the group's id. Listing every
group for each push would cost a paginated read per push, so the index is read once,
lazily, and kept. Creating is the delicate part: threads of one push (and pushes sharing
the destination) must not create one group twice, and a create whose answer was lost
(applied, then a 5xx; the seam's retry then hears "already exists") must end with the
group that exists, not with an error nor with a second group.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from crmsync.errors import AuthError, ConnectorError

log = logging.getLogger(__name__)


class GroupIndex:
    """Group name -> vendor id for one destination (a Mailchimp tag = static segment, a
    Klaviyo list, a HubSpot list). Thread-safe; listed once lazily; find-or-create.

    ``list_all`` yields (name, id) for every group, oldest first where the vendor can tell
    (two groups of one name: the first listed is used). ``create(name, first_members)``
    creates a group carrying up to ``carries`` first members in the same call and returns
    its id; with ``carries=0`` the vendor's create takes no members. A create either adds
    all the members it was given or raises.
    """

    def __init__(
        self,
        list_all: Callable[[], Iterable[tuple[str, str]]],
        create: Callable[[str, Sequence[str]], str],
        *,
        carries: int = 0,
    ) -> None:
        if carries < 0:
            raise ValueError(f"carries must not be negative, not {carries}")
        self._list_all = list_all
        self._create = create
        self._carries = carries
        self._ids: dict[str, str] | None = None
        self._lock = threading.Lock()  # guards _ids and _creating
        self._listing = threading.Lock()  # one listing at a time; waiters then reuse it
        self._creating: dict[str, threading.Lock] = {}  # one creation per name at a time

    def ids(self, names: Iterable[str]) -> dict[str, str]:
        """Ids of those of ``names`` that exist; nothing is created."""
        ids = self._loaded()
        with self._lock:
            return {name: ids[name] for name in names if name in ids}

    def ensure(self, name: str, first_members: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
        """The group's id, and which of ``first_members`` the create call already added
        (empty when the group existed, or was found after a create whose answer was lost:
        then nobody can say who is in it, and the caller adds everyone)."""
        ids = self._loaded()
        with self._lock:
            found = ids.get(name)
            if found is not None:
                return found, ()
            one_at_a_time = self._creating.setdefault(name, threading.Lock())
        with one_at_a_time:
            with self._lock:
                found = ids.get(name)  # created by another thread while this one waited
            if found is not None:
                return found, ()
            carried = tuple(first_members[: self._carries])
            try:
                made = self._create(name, carried)
            except AuthError:
                raise
            except ConnectorError:
                # It may have been created all the same (its answer lost, or another
                # process made it): look before giving up.
                existing = self._find(name)
                if existing is None:
                    raise
                made, carried = existing, ()
            with self._lock:
                ids[name] = made
            return made, carried

    def forget(self, name: str) -> None:
        """Drops ``name`` from the index, e.g. after a 404: deleted behind our back."""
        with self._lock:
            if self._ids is not None:
                self._ids.pop(name, None)

    def _loaded(self) -> dict[str, str]:
        with self._listing:
            if self._ids is None:
                self._ids = self._read()
            return self._ids

    def _find(self, name: str) -> str | None:
        """Lists again and keeps what it finds: the group ``name``'s id, if it exists now."""
        fresh = self._read()
        with self._lock:
            assert self._ids is not None  # ensure() loaded it first
            for each, group_id in fresh.items():
                self._ids.setdefault(each, group_id)
            return fresh.get(name)

    def _read(self) -> dict[str, str]:
        ids: dict[str, str] = {}
        for name, group_id in self._list_all():
            if name in ids:
                log.warning("two groups are named %r; using the first listed (%s)", name, ids[name])
                continue
            ids[name] = group_id
        return ids
