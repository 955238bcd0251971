"""The Mailchimp SDK, imported without the HTTP stack it never sends through here.

``mailchimp-marketing`` imports ``requests`` (with urllib3 and charset-normalizer) in its
``api_client`` and ``urllib3`` in its ``configuration``, at the top of each module. crmsync
sends every call through its own seam (``client.SeamApiClient`` replaces the SDK's only
use of ``requests``), and ``configuration`` uses ``urllib3`` only by name. Importing them
cost every process that loads the connector 80 to 150 ms on a 2-core machine, about a
twentieth of a run that finds nothing changed; they are left to ``crmsync.deferred``.
"""

from __future__ import annotations

from crmsync.deferred import deferred

# imported by the SDK, never used to send (``client.SeamApiClient``)
UNUSED_BY_THE_SEAM = ("requests", "urllib3")

with deferred(UNUSED_BY_THE_SEAM):
    from mailchimp_marketing import ApiClient, ListsApi, PingApi
    from mailchimp_marketing.api_client import ApiClientError

__all__ = ["ApiClient", "ApiClientError", "ListsApi", "PingApi"]
