"""A change crosses from the profile workers to the run pickled as its values: every
field arrives as it was sent, whatever fields the contract gains."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime

from crmsync.contract import Action, Change, ConsentIntent


def test_every_field_of_a_change_survives_pickling() -> None:
    values = {f.name: f"not the default: {f.name}" for f in dataclasses.fields(Change)}
    change = Change(**values)  # type: ignore[arg-type]  # any value tells the fields apart
    assert pickle.loads(pickle.dumps(change)) == change


def test_a_real_change_comes_back_equal_and_of_its_types() -> None:
    change = Change(
        "e:ada@example.com", Action.ARCHIVE, False, "ada@example.com", "+905321234567",
        {"FNAME": "Ada", "ORDERS": 3}, ("vip",), ("new",), ConsentIntent.UNSUBSCRIBE,
        ConsentIntent.LEAVE, "hash", "remote-1", ("vip", "loyal"),
        datetime(2026, 1, 2, tzinfo=UTC), None, resent=True,
    )  # fmt: skip
    back = pickle.loads(pickle.dumps(change))
    assert back == change
    assert back.action is Action.ARCHIVE and back.email_intent is ConsentIntent.UNSUBSCRIBE
