"""What every bulk destination needs, written once: Mailchimp, Klaviyo and HubSpot use it.

- ``chunks``: cut a push into calls the vendor accepts (by count and by encoded size) and
  send them side by side, answering the core with exactly one result per change and
  telling an outage (stop the run) from a bad chunk (fail those people).
- ``groups``: the name -> id index of the groups a destination keeps (Mailchimp tags,
  Klaviyo and HubSpot lists), listed once, created once, even under concurrency and
  lost answers.
- ``memberships``: the fewest membership calls for a batch of moves, their floor, and the
  owned-prefix guard.
- ``gather``: membership moves held across a whole run and released a full call at a
  time, so a run of many pushes costs the per-run floor of calls; ``run_moves``: a run's
  held moves with the pending answers and settling that keep the ledger honest.
- ``checks``: a mapping's fields that conflict with the destination's, as failed checks.

Pure where possible; the I/O is the caller's, passed in as functions, so a vendor's
connector keeps only what is really its own (endpoints, bodies, error texts).
"""

from __future__ import annotations

from connectors.kit.chunks import chunked, send_chunks
from connectors.kit.gather import Gathered
from connectors.kit.groups import GroupIndex
from connectors.kit.memberships import (
    MembershipCall,
    Move,
    floor_calls,
    members_to_add,
    minus_carried,
    owned_problem,
    plan_membership_calls,
)

__all__ = [
    "Gathered",
    "GroupIndex",
    "MembershipCall",
    "Move",
    "chunked",
    "floor_calls",
    "members_to_add",
    "minus_carried",
    "owned_problem",
    "plan_membership_calls",
    "send_chunks",
]
