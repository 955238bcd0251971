"""Klaviyo destination: profiles in bulk import jobs, segments as lists, and consent.

See ``docs/klaviyo.md``. Registered as the ``klaviyo`` destination kind.
"""

from __future__ import annotations

from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.destination import KlaviyoDestination

__all__ = ["KlaviyoConfig", "KlaviyoDestination"]
