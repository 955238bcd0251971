"""How a run records its end on what it raised (``RunReport.ended_by``), in one process
and on workers alike: interrupted with the reason, or failed with what was raised; a
signal's interruption hidden behind a lock's ``RuntimeError`` is still an interruption."""

from __future__ import annotations

from datetime import UTC, datetime

from crmsync.errors import ConnectorError
from crmsync.runs import Interrupted, RunReport


def report() -> RunReport:
    return RunReport("main", 1, "manual", False, datetime(2026, 12, 5, tzinfo=UTC))


def test_an_interruption_is_recorded_with_its_reason_and_raised_as_it_is() -> None:
    run, stop = report(), Interrupted("stopped by SIGTERM", 143)
    assert run.ended_by(stop) is stop
    assert (run.status, run.error) == ("interrupted", "stopped by SIGTERM")
    ctrl_c = report()
    assert isinstance(ctrl_c.ended_by(KeyboardInterrupt()), KeyboardInterrupt)
    assert (ctrl_c.status, ctrl_c.error) == ("interrupted", "interrupted by SIGINT (Ctrl-C)")


def test_an_interruption_hidden_by_a_locks_error_is_the_one_raised() -> None:
    stop = Interrupted("stopped by SIGTERM", 143)
    try:
        try:
            raise stop
        except Interrupted:
            raise RuntimeError("release unlocked lock")  # noqa: B904 (as the lock does)
    except RuntimeError as exc:
        hidden = exc
    run = report()
    assert run.ended_by(hidden) is stop
    assert (run.status, run.error) == ("interrupted", "stopped by SIGTERM")


def test_anything_else_fails_the_run_with_what_was_raised() -> None:
    ours, theirs = report(), report()
    mine = ConnectorError("Mailchimp refused the key")
    assert ours.ended_by(mine) is mine
    assert (ours.status, ours.error) == ("failed", "Mailchimp refused the key")
    other = RuntimeError("something else")  # no interruption behind it
    assert theirs.ended_by(other) is other
    assert (theirs.status, theirs.error) == ("failed", "RuntimeError: something else")
