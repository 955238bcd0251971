"""HubSpot destination: contacts upserted by e-mail in batches, custom properties in
crmsync's property group, segments as the options of a multiple-checkbox property and,
where configured, as MANUAL lists; consent read back, opt-outs recorded, deletions
archived or GDPR-deleted, within the account's 10-second window and daily limit.

Registered as the ``hubspot`` destination kind.
"""

from __future__ import annotations

from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.destination import HubSpotDestination

__all__ = ["HubSpotConfig", "HubSpotDestination"]
