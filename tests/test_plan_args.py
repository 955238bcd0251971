"""A plan task's fixed values (``distributed.work.PlanArgs``) as a message carries them,
including a message published by a version from before the ``scoped`` field."""

from __future__ import annotations

from datetime import UTC, datetime

from crmsync.diff import Policy
from distributed.work import PlanArgs, plan_args

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(max_attempts=5, now_ms=1_700_000_000_000)


def test_plan_args_come_back_as_they_were_sent() -> None:
    for scoped in (True, False):
        sent = plan_args(POLICY, AS_OF, 3, "abc", scoped=scoped)
        assert PlanArgs.of(sent.as_dict()) == sent


def test_a_message_from_before_scoped_plans_every_person_of_its_slice() -> None:
    old = plan_args(POLICY, AS_OF, 3, "abc", scoped=True).as_dict()
    del old["scoped"]  # those versions planned everyone in the slice
    args = PlanArgs.of(old)
    assert args.scoped is False
    assert (args.as_of_time(), args.the_policy(), args.samples) == (AS_OF, POLICY, 3)
