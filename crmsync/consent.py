"""Consent intents: the one place that decides what a destination may do about consent.

The profile builder has already resolved each channel's recorded consent (the latest of
the platform's own records and the opt-outs read back from destinations, an opt-out
winning a tie), so a person is ``SUBSCRIBED`` only with an opt-in newer than any
opt-out. From that state the intent follows, and it never asks a destination to raise
the status of a contact it already has:

========================  ======================  ==========================================
recorded consent          intent                  what a destination does
========================  ======================  ==========================================
subscribed                subscribe if new        a new contact is subscribed; an existing
                                                  one keeps its status (an opt-out there wins)
unsubscribed              unsubscribe             unsubscribed, new or existing
none                      leave                   never subscribed; an existing status stays
========================  ======================  ==========================================
"""

from __future__ import annotations

from crmsync.contract import ConsentIntent
from crmsync.records import ConsentState

_INTENT = {
    ConsentState.SUBSCRIBED.value: ConsentIntent.SUBSCRIBE_IF_NEW,
    ConsentState.UNSUBSCRIBED.value: ConsentIntent.UNSUBSCRIBE,
    ConsentState.NONE.value: ConsentIntent.LEAVE,
}


def intent_for(state: str) -> ConsentIntent:
    """The intent for a channel whose resolved consent state is ``state``."""
    return _INTENT[state]
