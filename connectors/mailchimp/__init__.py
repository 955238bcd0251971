"""Mailchimp destination: members, merge fields, segment tags and consent, in bulk.

See ``docs/mailchimp.md``. Registered as the ``mailchimp`` destination kind.
"""

from __future__ import annotations

from connectors.mailchimp.config import MailchimpConfig
from connectors.mailchimp.destination import MailchimpDestination

__all__ = ["MailchimpConfig", "MailchimpDestination"]
