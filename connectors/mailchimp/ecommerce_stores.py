"""The e-commerce stores of one Mailchimp destination: one per source, found or created
once, and paused (``is_syncing``) while historical events land.

A store's id is derived from its source's name (``ecommerce_bodies.store_id``), so the
store a crashed run created is found again, never created twice. Mailchimp documents a
store's ``is_syncing`` as pausing its automations; a store found syncing when it is
looked up was left so by an interrupted backfill and is resumed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from connectors.mailchimp import ecommerce_bodies as bodies
from connectors.mailchimp.client import MailchimpApiError
from connectors.mailchimp.ecommerce_api import EcommerceApi
from crmsync.errors import ConfigError, TransientError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """What the stores are made of: the audience, and how ids and names are derived."""

    list_id: str
    prefix: str
    name: str | None  # the store's name in Mailchimp; None: the source's name


class Stores:
    """Source name -> store id, each store ensured in Mailchimp once per instance."""

    def __init__(self, api: EcommerceApi, settings: StoreSettings) -> None:
        self._api = api
        self._settings = settings
        self._stores: dict[str, str] = {}
        self._lock = threading.Lock()

    def ensure(self, source: str, currency: str) -> str:
        """The source's store id, the store found or created in Mailchimp once per
        instance; a store left syncing by an interrupted backfill is resumed."""
        with self._lock:
            known = self._stores.get(source)
            if known is not None:
                return known
            store = bodies.store_id(self._settings.prefix, source)
            found = self._find(store)
            if found is None:
                name = self._settings.name or source
                body = bodies.store_body(
                    store, self._settings.list_id, currency, name, syncing=False
                )
                try:
                    self._api.add_store(body)
                except MailchimpApiError as exc:
                    # a create whose first answer was lost: it is there now
                    if exc.status != 400 or self._find(store) is None:
                        raise
            elif found.get("is_syncing") is True:
                log.warning("store %s was left syncing (an interrupted backfill?): resumed", store)
                self._api.update_store(store, {"is_syncing": False})
            self._stores[source] = store
            return store

    def _find(self, store: str) -> dict[str, Any] | None:
        try:
            found = self._api.get_store(store)
        except MailchimpApiError as exc:
            if exc.status == 404:
                return None
            raise
        if found.get("list_id") not in (None, self._settings.list_id):
            raise ConfigError(
                f"the Mailchimp store {store!r} belongs to another audience "
                f"({found.get('list_id')}); a store cannot move between audiences",
                key="store_prefix",
                hint="choose another store_prefix for this audience",
            )
        return found

    def pause(self, store: str) -> None:
        """Automations off while historical events land."""
        self._api.update_store(store, {"is_syncing": True})

    def resume(self, source: str, store: str) -> None:
        """Automations back on; when that call fails, the store is ensured again by the
        next push, which finds it syncing and resumes it."""
        try:
            self._api.update_store(store, {"is_syncing": False})
        except (TransientError, MailchimpApiError) as exc:
            log.warning("store %s: automations not resumed yet: %s", store, exc)
            with self._lock:
                self._stores.pop(source, None)
