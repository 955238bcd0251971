"""The consent invariant, proven once in the core.

Nobody is ever asked to be subscribed without a recorded opt-in newer than any opt-out
(the platform's own records and the opt-outs read back from destinations together), and
no intent ever raises the status of a contact a destination already has: the only
intents are "subscribe if new", "unsubscribe" and "leave as is". Every destination's
contract test then proves it translates these intents without breaking the rule.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from crmsync.config import ProfileSettings
from crmsync.consent import intent_for
from crmsync.contract import ConsentIntent, ConsentUpdate
from crmsync.diff import Policy, Skip, decide
from crmsync.records import Channel, Consent, ConsentState, Stream
from engine.profiles import ProfileContext, iter_profiles
from state.ledger import add_consent_events
from state.store import Store
from state.timeutil import to_ms
from tests.builders import NOW, customer

STATES = (ConsentState.SUBSCRIBED, ConsentState.UNSUBSCRIBED)


def test_each_recorded_state_has_exactly_one_intent() -> None:
    assert intent_for("subscribed") is ConsentIntent.SUBSCRIBE_IF_NEW
    assert intent_for("unsubscribed") is ConsentIntent.UNSUBSCRIBE
    assert intent_for("none") is ConsentIntent.LEAVE
    assert {intent_for(s.value) for s in ConsentState} == set(ConsentIntent)
    # there is no plain "subscribe": an existing contact's status is never raised
    assert {i.value for i in ConsentIntent} == {"subscribe_if_new", "unsubscribe", "leave"}


@pytest.mark.parametrize("seed", range(12))
def test_subscribe_only_with_an_opt_in_newer_than_any_opt_out(seed: int, tmp_path: Path) -> None:
    """Random consent histories of 40 people, split between the platform's records (in
    several sources) and opt-outs/opt-ins read back from a destination, through the real
    staging, profile builder and diff: each person's intent is subscribe-if-new exactly
    when the newest event is an opt-in, a tie going to the opt-out."""
    rng = random.Random(seed)
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    histories: dict[str, list[tuple[int, ConsentState]]] = {}
    for person in range(40):
        email = f"p{person}@example.com"
        history = histories[email] = []
        for source in ("shop", "outlet"):
            state = rng.choice((*STATES, None))
            at = NOW - timedelta(minutes=rng.randint(0, 4))  # few distinct times: ties
            consent = Consent(state, at) if state else None
            store.stage(
                source, Stream.CUSTOMERS, [customer(str(person), email, email_consent=consent)]
            )
            if state:
                history.append((to_ms(at) or 0, state))
        read_back = []
        for _ in range(rng.randint(0, 2)):
            state = rng.choice(STATES)
            at = NOW - timedelta(minutes=rng.randint(0, 4))
            read_back.append(ConsentUpdate(email, Channel.EMAIL, state, at))
            history.append((to_ms(at) or 0, state))
        with store.transaction() as conn:
            add_consent_events(conn, "mc", read_back, 0)
    ctx = ProfileContext(
        sources=("shop", "outlet"),
        consent_scopes=("shop", "outlet", "mc"),
        currency="TRY",
        as_of_ms=to_ms(NOW) or 0,
        settings=ProfileSettings(),
    )
    seen = set()
    with store.engine.connect() as conn:
        for profile in iter_profiles(conn, ctx):
            history = histories[profile["email"]]
            seen.add(profile["email"])
            change = decide(profile, {"n": 1}, (), True, None, None, Policy(3, 0))
            assert not isinstance(change, Skip)
            if not history:
                assert change.email_intent is ConsentIntent.LEAVE
                continue
            newest = max(at for at, _ in history)
            opted_out = any(s is ConsentState.UNSUBSCRIBED for at, s in history if at == newest)
            expected = ConsentIntent.UNSUBSCRIBE if opted_out else ConsentIntent.SUBSCRIBE_IF_NEW
            assert change.email_intent is expected, (profile["email"], history)
    assert seen == set(histories)
