"""What a run that never recorded its end had acknowledged, read from the ledger.

A run writes its counts when it ends, interrupted included; one killed outright (SIGKILL,
a power cut) or still going has none. Every acknowledgement writes the run's id on the
person's ledger row in the same transaction, so the rows carrying that id are what the
run got acknowledged, and are still the latest word on (a later run that acknowledges a
person again takes the row over, so for an old run this is a lower bound).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from state import schema


def acknowledged_by_run(
    conn: Connection, run_id: int, destinations: Sequence[str]
) -> dict[str, int]:
    """Per destination, the ledger rows run ``run_id`` wrote (every destination named)."""
    t = schema.ledger
    query = (
        select(t.c.destination, func.count())
        .where(t.c.run_id == run_id, t.c.destination.in_(destinations))
        .group_by(t.c.destination)
    )
    found = {str(name): int(n) for name, n in conn.execute(query)}
    return {name: found.get(name, 0) for name in destinations}
