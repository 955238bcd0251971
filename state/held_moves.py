"""A run's held membership moves in the state database, shared by every worker of the run
(``crmsync.contract.SharedMoves``).

A destination that gathers membership moves across a run (Mailchimp's tags, Klaviyo's
and HubSpot's lists) holds them until they fill a call. In one process they wait in its
memory; a run on Celery workers pushes its batches in many processes, so they wait here
instead, in ``held_moves`` under the run and destination, and the run's job is one for
all of them: whichever worker collects the run's job sends what is left, in the fewest
calls, and answers every person it held with the failures any worker kept.

A worker takes the moves of a full call under a lock of the run's destination
(PostgreSQL's transaction advisory lock, so two workers never take the same move) and
marks them as being sent; it forgets them once the call went out. A worker killed in
between leaves them marked: the run's collect sends everything still here, marked or
not, and joining or leaving a group twice is harmless.

A push holds, marks and forgets every one of its people's moves (about 17,000 for a
Mailchimp push of 10,000 people): on PostgreSQL each of the three is one statement over
parameter arrays (``unnest``), not a statement per move, which cost a worker two thirds
of its pushing time at 100,000 customers in the client's parameter building and the
server's per-statement work.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import and_, bindparam, delete, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from crmsync.contract import HeldMove
from state.bulk import text_array
from state.dialect import upsert_insert
from state.work_queue import held_failures, held_moves

__all__ = ["HeldInState"]


class HeldInState:
    """The held moves of one run's destination, in the state database."""

    def __init__(self, engine: Engine, run_id: int, destination: str) -> None:
        self.engine, self.run_id, self.destination = engine, run_id, destination

    @property
    def token(self) -> str:
        return f"run{self.run_id}"

    def exchange(
        self,
        moves: Sequence[HeldMove],
        take: Callable[[list[HeldMove]], list[HeldMove]],
        *,
        everything: bool = False,
    ) -> list[HeldMove]:
        t = held_moves
        with self.engine.begin() as conn:
            self._lock(conn)
            if moves:
                self._hold(conn, moves)
            query = select(t.c.grp, t.c.side, t.c.member).where(self._mine())
            if not everything:
                groups = sorted({group for group, _, _ in moves})
                if not groups:
                    return []
                query = query.where(t.c.grp.in_(groups), t.c.sending == 0)
            query = query.order_by(t.c.seq, t.c.grp, t.c.side, t.c.member)
            loaded: list[HeldMove] = [(g, s, m) for g, s, m in conn.execute(query)]
            taken = take(loaded)
            if taken:
                if conn.dialect.name == "postgresql":
                    _arrays(conn, _MARK, taken, after=(self.run_id, self.destination))
                else:
                    statement = update(t).where(self._mine(), self._each()).values(sending=1)
                    conn.execute(statement, self._params(taken))
            return taken

    def sent(self, moves: Sequence[HeldMove]) -> None:
        if not moves:
            return
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                _arrays(conn, _FORGET, moves, after=(self.run_id, self.destination))
                return
            conn.execute(delete(held_moves).where(self._mine(), self._each()), self._params(moves))

    def fail(self, reasons: Mapping[str, str]) -> None:
        if not reasons:
            return
        rows = [
            {"run_id": self.run_id, "destination": self.destination, "member": m, "reason": why}
            for m, why in reasons.items()
        ]
        with self.engine.begin() as conn:
            statement = upsert_insert(conn, held_failures).on_conflict_do_nothing(
                index_elements=["run_id", "destination", "member"]
            )  # the first reason stays
            conn.execute(statement, rows)

    def failures(self) -> dict[str, str]:
        f = held_failures
        query = select(f.c.member, f.c.reason).where(
            f.c.run_id == self.run_id, f.c.destination == self.destination
        )
        with self.engine.connect() as conn:
            return {member: reason for member, reason in conn.execute(query)}

    # -- helpers ------------------------------------------------------------------------

    def _hold(self, conn: Connection, moves: Sequence[HeldMove]) -> None:
        """Holds the moves, oldest first by the time they came; one held already waits
        again (a batch pushed again after its worker died)."""
        first = time.time_ns()
        held = list(dict.fromkeys(moves))  # each once: a statement updates a row once
        if conn.dialect.name == "postgresql":
            _arrays(conn, _HOLD, held, before=(self.run_id, self.destination, first))
            return
        rows = [
            {
                "run_id": self.run_id,
                "destination": self.destination,
                "grp": group,
                "side": side,
                "member": member,
                "seq": first + i,
                "sending": 0,
            }
            for i, (group, side, member) in enumerate(held)
        ]
        statement = upsert_insert(conn, held_moves)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["run_id", "destination", "grp", "side", "member"],
                set_={"sending": 0},
            ),
            rows,
        )

    def _lock(self, conn: Connection) -> None:
        """One process at a time takes from the run's destination, until it commits."""
        if conn.dialect.name != "postgresql":  # SQLite: one writer at a time anyway
            return
        name = f"crmsync-moves/{self.run_id}/{self.destination}".encode()
        key = int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def _mine(self) -> ColumnElement[bool]:
        t = held_moves
        return and_(t.c.run_id == self.run_id, t.c.destination == self.destination)

    @staticmethod
    def _each() -> ColumnElement[bool]:
        """One move, of each parameter set (``_params``)."""
        t = held_moves
        return and_(
            t.c.grp == bindparam("b_grp"),
            t.c.side == bindparam("b_side"),
            t.c.member == bindparam("b_member"),
        )

    @staticmethod
    def _params(moves: Sequence[HeldMove]) -> list[dict[str, str]]:
        return [{"b_grp": g, "b_side": s, "b_member": m} for g, s, m in moves]


# PostgreSQL: each statement takes the moves as three text arrays (group, side, member;
# ``{moves}``) after its fixed parameters; a move is found by the table's primary key
_HOLD = (
    "INSERT INTO held_moves (run_id, destination, grp, side, member, seq, sending) "
    "SELECT %s, %s, u.grp, u.side, u.member, %s + u.n - 1, 0 "
    "FROM {moves} WITH ORDINALITY AS u(grp, side, member, n) "
    "ON CONFLICT (run_id, destination, grp, side, member) DO UPDATE SET sending = 0"
)
_MARK = (
    "UPDATE held_moves AS h SET sending = 1 FROM {moves} AS u(grp, side, member) "
    "WHERE h.run_id = %s AND h.destination = %s "
    "AND h.grp = u.grp AND h.side = u.side AND h.member = u.member"
)
_FORGET = (
    "DELETE FROM held_moves AS h USING {moves} AS u(grp, side, member) "
    "WHERE h.run_id = %s AND h.destination = %s "
    "AND h.grp = u.grp AND h.side = u.side AND h.member = u.member"
)


def _arrays(
    conn: Connection,
    sql: str,
    moves: Sequence[HeldMove],
    before: tuple[object, ...] = (),
    after: tuple[object, ...] = (),
) -> None:
    """Runs one of the statements above, its parameters ``before``, the moves as three
    arrays (each one string the server splits, ``state.bulk.text_array``), then
    ``after``, on the driver's connection inside the caller's transaction."""
    arrays = [text_array([move[i] for move in moves]) for i in range(3)]
    moves_sql = f"unnest({', '.join(sql for sql, _ in arrays)})"
    params = (*before, *(param for _, param in arrays), *after)
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(sql.format(moves=moves_sql), params, binary=True)
