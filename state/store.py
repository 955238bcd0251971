"""The one store API over the state database: staging, cursors, runs, leases, ledger,
failures, consent and quarantine. SQLite (WAL) by default, PostgreSQL in production.

Every write that must be atomic with another (records with their cursor, a batch's
acknowledgements with its failures) happens inside one ``with store.transaction()``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Select, create_engine, delete, event, func, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from crmsync.errors import StateError
from crmsync.not_synced import Reason, Summary
from crmsync.profile_scope import ProfileContext
from crmsync.records import Cart, Customer, Order, RecordIssue, Stream
from state import not_synced, schema
from state.dialect import upsert_insert
from state.engines import KeptEngines
from state.first_load import deferred_indexes, restore_indexes
from state.migrate import require_current, upgrade
from state.readonly import readonly_engine
from state.stage_rows import Built, build
from state.staging import StageStats, count_issues, forget_issues, stage_records, store_issues
from state.timeutil import from_ms, now_ms, to_ms

WAL_ATTEMPTS = 100  # looks at a new file's journal mode, 20 ms apart (``_write_ahead_log``)
# Pages the write-ahead log holds before a commit copies them into the database file
# (SQLite's default is 1,000: 4 MB). A staging batch writes more than that, so at the
# default every commit checkpointed, with two fsyncs and a write of every page it had
# touched, however often the batches before had written the same pages. At 25,000 pages
# (about 100 MB of log on disk), upserting 1.5M order-shaped rows took 14.4-15.1 s, not
# 18.3-20.5 s; synchronous stays NORMAL, so a commit is as durable as before.
WAL_CHECKPOINT_PAGES = 25_000
ANALYZE_AFTER = 1000  # rows written before statistics are refreshed (PostgreSQL)
# ... and then only of a table whose statistics count fewer than this many times as many
# rows, or that has none (PostgreSQL's autovacuum_analyze_scale_factor, by default)
ANALYZE_SHARE = 0.1
# tables analyzed side by side, each by a server process of its own: one ANALYZE keeps one
# core busy, and a first sync's five staging tables took 1.2 s one after another at
# 100,000 customers, between the pull and the planning, when nothing else runs
ANALYZE_AT_ONCE = 2
# the tables whose statistics planning relies on, by what writes them: a pull, and a
# run's pushes and planning (read by the next run)
STATISTICS = {
    "staging": ("customers", "orders", "order_lines", "carts", "touched"),
    "plans": ("ledger", "in_flight", "failures", "planned"),
}
# the pool of an engine kept from run to run (``state.engines``): this many connections
# stay open between runs, and runs at once open as many more as they need, closed when
# given back (a cap would make a run wait for the connections of another)
KEPT_POOL = {"pool_size": 8, "max_overflow": -1}


# the tables of the store's schema that have been analyzed, and the rows their
# statistics count (``reltuples``, which CREATE INDEX also sets, without statistics)
_ANALYZED = text(
    "SELECT c.relname, c.reltuples FROM pg_class c"
    " JOIN pg_stat_user_tables s ON s.relid = c.oid"
    " WHERE s.schemaname = current_schema() AND c.relname = ANY(:names)"
    " AND (s.last_analyze IS NOT NULL OR s.last_autoanalyze IS NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    pipeline: str
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    as_of: datetime
    force_before: datetime | None
    force_since: datetime | None
    counts: dict[str, Any]
    error: str | None


def _engine(url: str, pool: Mapping[str, int] | None = None) -> Engine:
    """An engine on ``url``; ``pool``: the size of its pool (``KEPT_POOL``), SQLAlchemy's
    default (5 connections kept, 10 more at most) when None."""
    parsed = make_url(url)
    sizes = dict(pool or {})
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60}, **sizes)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            _write_ahead_log(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            # 32 MB of pages per connection (SQLite's default is 2 MB): staging's seeks in
            # large indexes then find their upper levels in memory
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in {"", "psycopg2"}:
        url = str(parsed.set(drivername="postgresql+psycopg"))
    engine = create_engine(url, pool_pre_ping=True, **sizes)
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _custom_plans(dbapi_connection: Any, _record: Any) -> None:
            # psycopg prepares a statement on its fifth use, and PostgreSQL may then keep a
            # generic plan made while a staging table was still empty: a sequential scan
            # that every later batch repeats over a growing table. Plan each execution
            # for its own parameters and the table as it is.
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_connection.commit()

    return engine


def _in_memory(url: str) -> bool:
    """A SQLite database that lives in its connections, not in a file."""
    parsed = make_url(url)
    name = parsed.database or ""
    return parsed.get_backend_name() == "sqlite" and (
        name in ("", ":memory:") or parsed.query.get("mode") == "memory"
    )


def _migrated(engine: Engine) -> None:
    """The database brought to this code's schema: a query when it is current, an error
    when a newer crmsync wrote it (``state.migrate.upgrade``)."""
    upgrade(engine)
    restore_indexes(engine)  # a first load killed part-way dropped them


def _write_ahead_log(cursor: sqlite3.Cursor) -> None:
    """Puts the database file in WAL mode, which it keeps once set.

    Switching a new file's journal takes an exclusive lock, and when several processes
    connect to a brand-new file at once (a run's planning children), SQLite answers one
    of them "database is locked" at once rather than after the busy timeout, to break the
    deadlock between two connections that both wait for it. That connection looks again
    shortly: by then another has switched the file, and the mode reads back as WAL.
    """
    for attempt in range(WAL_ATTEMPTS):
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()
            if mode is not None and str(mode[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.02)


@dataclass(frozen=True, slots=True)
class StreamVersion:
    """What a complete read of a ``Versioned`` source's stream leaves: the token to compare
    the next run's with, or None to forget the stored one (items were left for later, or
    the source could not tell)."""

    token: str | None


def _keep_version(
    conn: Connection, connector: str, stream: str, token: str | None, at: int
) -> None:
    table = schema.source_versions
    if token is None:
        conn.execute(delete(table).where(table.c.connector == connector, table.c.stream == stream))
        return
    insert = upsert_insert(conn, table)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["connector", "stream"],
            set_={"version": insert.excluded.version, "updated_at": insert.excluded.updated_at},
        ),
        {"connector": connector, "stream": stream, "version": token, "updated_at": at},
    )


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_local_holder(holder: str) -> bool:
    """True when ``holder`` is a process on this machine that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _open_failure(url: str, exc: Exception) -> str:
    """Why the database at ``url`` (the config's ``state.url``) cannot be opened, and what
    to write instead; the URL is shown without its password."""
    try:
        shown = make_url(url).render_as_string()
    except SQLAlchemyError:
        shown = "(not a database URL)"
    detail = str(exc).splitlines()[0] if str(exc) else ""
    text = f"cannot open the state database {shown} (state.url): {type(exc).__name__}: {detail}"
    if url.startswith("postgres:"):
        return f"{text} (hint: write postgresql:// instead of postgres://)"
    if isinstance(exc, ImportError) or "Can't load plugin" in detail:
        return f"{text} (hint: use sqlite:///path/to/file.db or postgresql://user@host:5432/db)"
    return text


class Store:
    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        read_only: bool = False,
        kept: KeptEngines | None = None,
    ) -> None:
        """``read_only`` (``status``, ``plan --person``): never creates, migrates or
        writes the database, and refuses one whose schema is not this code's
        (``state.readonly``). ``kept`` (a long-lived process: ``serve``): the engine is
        the one ``kept`` holds for ``url``, opened by the first store of the process to ask
        for it, and ``close`` leaves it open for the next. Each store still checks the
        schema (``migrate``), so a run of an older crmsync beside a newer one's migration
        is refused as before, however long its process has kept the engine."""
        self.url = url
        self._kept = kept is not None and not read_only and not _in_memory(url)
        try:
            if read_only:
                self.engine = readonly_engine(url, _engine)
                require_current(self.engine, url)
            else:
                if kept is not None and self._kept:
                    self.engine = kept.engine(url, partial(_engine, pool=KEPT_POOL))
                else:
                    self.engine = _engine(url)
                if migrate:
                    _migrated(self.engine)
        except (SQLAlchemyError, ImportError) as exc:  # ImportError: a driver not installed
            raise StateError(_open_failure(url, exc)) from exc

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def refresh_statistics(self, written: str, *, changed: int) -> None:
        """Has PostgreSQL gather fresh statistics on the tables of ``written`` (``staging``
        or ``plans``, see ``STATISTICS``) after ``changed`` rows.

        Without them (a store just filled, a server with autovacuum off or not yet round)
        the planner takes every table for a few rows and joins an incremental run's
        scope to the orders by a nested loop over both: 40 s instead of milliseconds at
        100k customers. ``ANALYZE`` samples a bounded number of rows, so it costs
        a fraction of a second however big the table, but a run's small change does not
        make the statistics of a large table wrong: only a table with none yet, or whose
        statistics count fewer than ``changed`` / ``ANALYZE_SHARE`` rows, is analyzed
        (a 1 %-changed run at 100,000 customers spent 2.2 of its 6.3 s analyzing tables
        whose statistics were right), ``ANALYZE_AT_ONCE`` tables at a time. ``changed``
        counts the rows written to all of them, so each table's share is over-estimated,
        never under. SQLite's planner does not need it.
        """
        if self.engine.dialect.name != "postgresql" or changed < ANALYZE_AFTER:
            return
        names = [schema.metadata.tables[name].name for name in STATISTICS[written]]
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            known = {
                str(name): float(rows) for name, rows in conn.execute(_ANALYZED, {"names": names})
            }
        due = [
            name
            for name in names
            if (rows := known.get(name)) is None or changed > ANALYZE_SHARE * rows
        ]
        with ThreadPoolExecutor(ANALYZE_AT_ONCE, thread_name_prefix="crmsync-analyze") as pool:
            list(pool.map(self._analyze, due))  # raises what an ANALYZE raised

    def _analyze(self, table: str) -> None:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {table}"))

    def checkpoint(self) -> tuple[int, int] | None:
        """Copies what a SQLite store's write-ahead log holds into the database file,
        waiting for no reader or writer (``PASSIVE``); returns the log's pages and how
        many of them are in the file now. Nothing (None) on PostgreSQL, nor on a
        database in memory (one connection, not to be used from a second thread).

        The last connection's close copies the rest, and syncs the log and the file,
        while the process ends. A run writes more pages than its rows suggest: the
        indexes a first load builds by sorting are full, and each later insert splits
        pages (a run after 1 % of 100,000 customers changed left 8,466 pages, 33 MB, to
        copy, and its close took 0.15 to 0.18 s of a 2.3 s run). Run beside the run's
        last vendor calls, this leaves the close only what was written after it.
        """
        if self.dialect != "sqlite" or _in_memory(self.url):
            return None
        with self.engine.connect() as conn:
            _, pages, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        return int(pages), int(copied)

    def after_run(self, *, changed: int) -> None:
        """What the database does once a run has written its plans and answers
        (``changed`` rows): PostgreSQL gathers the plan tables' statistics
        (``refresh_statistics``), a SQLite store's log is copied into its file
        (``checkpoint``). A run calls it beside its final collect, in one process and on
        workers alike."""
        self.refresh_statistics("plans", changed=changed)
        self.checkpoint()

    def close(self) -> None:
        """Closes the store's connections; a kept engine stays open for the next run."""
        if not self._kept:
            self.engine.dispose()

    def forget_idle_connections(self) -> None:
        """Closes the pooled connections nobody holds (a database in memory lives only in
        its one connection, so it keeps it)."""
        if not isinstance(self.engine.pool, SingletonThreadPool | StaticPool):
            self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise StateError(f"state database error: {str(exc).splitlines()[0]}") from exc

    # -- staging -------------------------------------------------------------------------

    def stage(
        self,
        source: str,
        stream: Stream,
        records: Sequence[Customer | Order | Cart],
        issues: Sequence[RecordIssue] = (),
        *,
        cursor: datetime | None = None,
        version: StreamVersion | None = None,
    ) -> StageStats:
        """Stores one batch of records as ``stage_built`` does, building their rows here."""
        built = build(source, stream, records)
        return self.stage_built(source, stream, built, issues, cursor=cursor, version=version)

    def stage_built(
        self,
        source: str,
        stream: Stream,
        records: Sequence[Built],
        issues: Sequence[RecordIssue] = (),
        *,
        cursor: datetime | None = None,
        version: StreamVersion | None = None,
        seen_at: int | None = None,
        forget: bool = False,
    ) -> StageStats:
        """Stores one batch of built records (``state.stage_rows``) and, when given, moves
        the stream's cursor and keeps (or forgets) its version, in one transaction.

        ``seen_at`` (ms) is when the batch's issues count as seen: the start of the read
        they came from, for each of its batches. The last batch of a read that went
        through the whole stream then forgets (``forget``) the stream's issues seen
        before: those no batch of it reported (``staging.forget_issues``). One time for
        the whole read, rather than each batch's own, so that no step of the clock while
        it runs makes an issue just reported look older than the read."""
        at = now_ms()
        seen = at if seen_at is None else seen_at
        with self.transaction() as conn:
            durable = cursor is not None or version is not None  # else re-read after a crash
            stats = stage_records(conn, source, stream, records, at, durable=durable)
            store_issues(conn, source, issues, seen)
            count_issues(stats, issues)
            if forget:
                stats.forgotten = forget_issues(conn, source, stream, seen)
            if cursor is not None:
                self._set_cursor(conn, source, stream.value, cursor)
            if version is not None:
                _keep_version(conn, source, stream.value, version.token, at)
        return stats

    @contextmanager
    def loading(self, stream: Stream) -> Iterator[None]:
        """Wraps every batch of one stream's load (``stage`` calls, each its own
        transaction): into an empty table, its secondary indexes are built once at the
        end instead of kept up row by row (``state.first_load``)."""
        with deferred_indexes(self.engine, schema.metadata.tables[stream.value]):
            yield

    def source_version(self, connector: str, stream: str) -> str | None:
        """The version a stream had at its last complete read that left nothing for later."""
        table = schema.source_versions
        with self.engine.connect() as conn:
            value = conn.execute(
                select(table.c.version).where(
                    table.c.connector == connector, table.c.stream == stream
                )
            ).scalar()
        return None if value is None else str(value)

    def cursor(self, connector: str, stream: str) -> datetime | None:
        table = schema.cursors
        with self.engine.connect() as conn:
            value = conn.execute(
                select(table.c.position).where(
                    table.c.connector == connector, table.c.stream == stream
                )
            ).scalar()
        return from_ms(value)

    def set_cursor(self, connector: str, stream: str, position: datetime) -> None:
        with self.transaction() as conn:
            self._set_cursor(conn, connector, stream, position)

    def reset_cursors(self, connectors: Sequence[str], to: datetime | None = None) -> None:
        """For backfills: forget (or move back) the cursors of these connectors, and the
        versions of their streams, so that every stream is read again."""
        table = schema.cursors
        with self.transaction() as conn:
            if to is None:
                conn.execute(delete(table).where(table.c.connector.in_(connectors)))
            else:
                conn.execute(
                    update(table)
                    .where(table.c.connector.in_(connectors), table.c.position > to_ms(to))
                    .values(position=to_ms(to), updated_at=now_ms())
                )
            versions = schema.source_versions
            conn.execute(delete(versions).where(versions.c.connector.in_(connectors)))

    @staticmethod
    def _set_cursor(conn: Connection, connector: str, stream: str, position: datetime) -> None:
        table = schema.cursors
        row = {"connector": connector, "stream": stream, "position": to_ms(position)}
        row["updated_at"] = now_ms()
        insert = upsert_insert(conn, table)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["connector", "stream"],
                set_={
                    "position": insert.excluded.position,
                    "updated_at": insert.excluded.updated_at,
                },
            ),
            row,
        )

    def cursors(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.cursors).order_by("connector", "stream"))
            return [
                {
                    "connector": r.connector,
                    "stream": r.stream,
                    "position": from_ms(r.position),
                    "updated_at": from_ms(r.updated_at),
                }
                for r in rows
            ]

    # -- runs and leases ---------------------------------------------------------------

    def start_run(
        self,
        pipeline: str,
        kind: str,
        as_of: datetime,
        *,
        force_before: datetime | None = None,
        force_since: datetime | None = None,
    ) -> int:
        with self.transaction() as conn:
            result = conn.execute(
                schema.runs.insert().values(
                    pipeline=pipeline,
                    kind=kind,
                    status="running",
                    started_at=now_ms(),
                    as_of=to_ms(as_of),
                    force_before=to_ms(force_before),
                    force_since=to_ms(force_since),
                    counts="{}",
                )
            )
            run_id = result.inserted_primary_key
            assert run_id is not None
            return int(run_id[0])

    def finish_run(
        self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                update(schema.runs)
                .where(schema.runs.c.id == run_id)
                .values(
                    status=status,
                    finished_at=now_ms(),
                    counts=json.dumps(counts, sort_keys=True, default=str),
                    error=error,
                )
            )

    def mark_interrupted(self, pipeline: str) -> int:
        """Runs left 'running' by a crash (the caller holds the pipeline's lease)."""
        with self.transaction() as conn:
            result = conn.execute(
                update(schema.runs)
                .where(schema.runs.c.pipeline == pipeline, schema.runs.c.status == "running")
                .values(status="interrupted", finished_at=now_ms())
            )
            return int(result.rowcount)

    def runs(self, pipeline: str | None = None, limit: int = 10) -> list[RunRow]:
        table = schema.runs
        query = select(table).order_by(table.c.id.desc()).limit(limit)
        if pipeline:
            query = query.where(table.c.pipeline == pipeline)
        with self.engine.connect() as conn:
            return [self._run_row(r) for r in conn.execute(query)]

    def unfinished_backfill(self, pipeline: str) -> RunRow | None:
        """The newest backfill of this pipeline, if it never finished (to resume it)."""
        table = schema.runs
        query = (
            select(table)
            .where(table.c.pipeline == pipeline, table.c.kind == "backfill")
            .order_by(table.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.status not in {"running", "interrupted"}:
            return None
        return self._run_row(row)

    @staticmethod
    def _run_row(r: Any) -> RunRow:
        return RunRow(
            id=r.id,
            pipeline=r.pipeline,
            kind=r.kind,
            status=r.status,
            started_at=from_ms(r.started_at),  # type: ignore[arg-type]
            finished_at=from_ms(r.finished_at),
            as_of=from_ms(r.as_of),  # type: ignore[arg-type]
            force_before=from_ms(r.force_before),
            force_since=from_ms(r.force_since),
            counts=json.loads(r.counts or "{}"),
            error=r.error,
        )

    def acquire_lease(self, name: str, ttl_seconds: float, holder: str | None = None) -> str | None:
        """Takes the named lease if it is free, expired, or held by a dead local process.

        Returns the holder id, or None when another live holder has it. Holders renew
        their lease while they work (``renew_lease``), so a crashed holder on another
        machine blocks the pipeline for at most one TTL.
        """
        holder = holder or default_holder()
        now = now_ms()
        expires = now + int(ttl_seconds * 1000)
        table = schema.leases
        with self.transaction() as conn:
            current = conn.execute(select(table).where(table.c.name == name)).first()
            if current is not None:
                free = (
                    current.expires_at < now
                    or current.holder == holder
                    or _dead_local_holder(current.holder)
                )
                if not free:
                    return None
                taken = conn.execute(
                    update(table)
                    .where(table.c.name == name, table.c.holder == current.holder)
                    .values(holder=holder, expires_at=expires)
                ).rowcount
                return holder if taken else None
            insert = upsert_insert(conn, table)
            inserted = conn.execute(
                insert.on_conflict_do_nothing(index_elements=["name"]).returning(table.c.name),
                {"name": name, "holder": holder, "expires_at": expires},
            ).first()
            return holder if inserted is not None else None

    def renew_lease(self, name: str, holder: str, ttl_seconds: float) -> bool:
        table = schema.leases
        with self.transaction() as conn:
            renewed = conn.execute(
                update(table)
                .where(table.c.name == name, table.c.holder == holder)
                .values(expires_at=now_ms() + int(ttl_seconds * 1000))
            ).rowcount
        return bool(renewed)

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """Who holds the named lease and until when; None when nobody does (or it expired)."""
        table = schema.leases
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.name == name)).first()
        if row is None or row.expires_at < now_ms():
            return None
        return str(row.holder), from_ms(row.expires_at)  # type: ignore[return-value]

    def release_lease(self, name: str, holder: str) -> None:
        table = schema.leases
        with self.transaction() as conn:
            conn.execute(delete(table).where(table.c.name == name, table.c.holder == holder))

    # -- status ------------------------------------------------------------------------

    def quarantine(
        self, sources: Sequence[str] | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        table = schema.quarantine
        query = select(table).order_by(table.c.last_seen.desc(), table.c.record_key).limit(limit)
        if sources is not None:
            query = query.where(table.c.source.in_(sources))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def quarantine_counts(self, sources: Sequence[str]) -> dict[str, int]:
        table = schema.quarantine
        query = (
            select(table.c.action, func.count())
            .where(table.c.source.in_(sources))
            .group_by(table.c.action)
        )
        with self.engine.connect() as conn:
            return {action: int(n) for action, n in conn.execute(query)}

    def name_not_synced(
        self,
        pipeline: str,
        ctx: ProfileContext,
        invalid: Mapping[str, Sequence[str]],
        naming: not_synced.Naming,
    ) -> Summary:
        """Names the records a run left out (``invalid``: per destination, the keys of the
        people it could not address); when the run keeps them, they replace the
        pipeline's rows in ``not_synced`` (the same set as last time is not written
        again). Returns the counts per reason and the first records of each, the
        quarantined ones included.

        A pipeline never named before (its first sync) has no set to compare with: its
        records are written as they are read, in one pass. Otherwise they are read once
        for the digest, and again, streamed, only when the set differs."""
        currencies, limit = naming.currencies, naming.limit
        summary = Summary(limit)
        # read once: a run that keeps its names holds the pipeline's lease, so no other
        # run changes the set until it is replaced below
        stored = self._stored_digest(pipeline) if naming.keep else None
        digest: not_synced.Digest | None = None  # None: the records are written as read
        if not naming.keep or stored is not None:
            digest = not_synced.Digest()
            with self.engine.connect() as conn:
                for record in not_synced.records(conn, ctx, invalid, currencies):
                    summary.add(record)
                    digest.add(record)
        if naming.keep:
            with self.transaction() as conn:
                if digest is None:
                    found = not_synced.summed(
                        not_synced.records(conn, ctx, invalid, currencies), summary
                    )
                    digest = not_synced.replace(conn, pipeline, found)
                elif stored != digest.hexdigest():
                    found = not_synced.records(conn, ctx, invalid, currencies)
                    digest = not_synced.replace(conn, pipeline, found)  # read again: streamed
                written, at = digest.hexdigest(), now_ms()
                not_synced.mark(conn, pipeline, written, digest.count, naming.run_id, at)
        with self.engine.connect() as conn:
            summary.put(Reason.QUARANTINED, *not_synced.quarantined(conn, ctx.sources, limit))
        return summary

    def _stored_digest(self, pipeline: str) -> str | None:
        """The digest of the pipeline's named set; None when it was never named."""
        with self.engine.connect() as conn:
            return not_synced.stored_digest(conn, pipeline)

    def rename_not_synced(
        self,
        scope: Select[Any],
        pipeline: str,
        ctx: ProfileContext,
        invalid: Mapping[str, Sequence[str]],
        naming: not_synced.Naming,
        conn: Connection | None = None,
    ) -> Summary | None:
        """Names the records a run left out, as ``name_not_synced`` does, for a run that
        planned again only the people in ``scope`` (a query of their person keys, run on
        ``conn`` when it reads a temporary table; ``invalid``: those among them a
        destination could not address): only their records, and those every run names
        anew, are looked up (``not_synced.rename_scope``), and the counts and first
        records are read back from the rows, which are kept. None: no run named the
        pipeline's records yet, so this one must name them all."""
        with self._connection(conn) as on:
            on.commit()  # ends the planning's reads: what follows is one transaction
            try:
                summary = not_synced.rename(on, pipeline, ctx, scope, invalid, naming)
            except OperationalError as exc:
                on.rollback()
                raise StateError(f"state database error: {str(exc).splitlines()[0]}") from exc
            except BaseException:
                on.rollback()
                raise
            if summary is not None:
                on.commit()
            else:
                on.rollback()
            return summary

    def named_outside(
        self, scope: Select[Any], pipeline: str, conn: Connection | None = None
    ) -> dict[str, list[str]]:
        """Per destination, the people outside ``scope`` (run on ``conn`` when it reads a
        temporary table) the last run named as ones it could not address."""
        with self._connection(conn) as on:
            return not_synced.named_outside(on, pipeline, scope)

    def _connection(self, conn: Connection | None) -> AbstractContextManager[Connection]:
        """``conn`` itself (left open), or a connection of the pool for the block."""
        return nullcontext(conn) if conn is not None else self.engine.connect()

    def renew_not_synced(
        self, pipeline: str, sources: Sequence[str], *, run_id: int | None, keep: bool, limit: int
    ) -> Summary:
        """The records the last run named, for a run that found the same set without
        naming them again (nothing staged, nobody planned again); with ``keep``, this run
        is recorded as naming them."""
        if keep:
            table = schema.not_synced_sets
            with self.transaction() as conn:
                conn.execute(
                    update(table)
                    .where(table.c.pipeline == pipeline)
                    .values(run_id=run_id, named_at=now_ms())
                )
        return self.not_synced(pipeline, sources, limit)[0]

    def not_synced(
        self, pipeline: str, sources: Sequence[str], limit: int
    ) -> tuple[Summary, int | None]:
        """What the pipeline's last run left out, and that run's id (None: none recorded),
        with the records quarantined now."""
        with self.engine.connect() as conn:
            return not_synced.stored(conn, pipeline, sources, limit)

    def failures(self, destinations: Sequence[str], limit: int = 50) -> list[dict[str, Any]]:
        table = schema.failures
        query = (
            select(table)
            .where(table.c.destination.in_(destinations))
            .order_by(table.c.last_failed_at.desc(), table.c.person_key)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def failure_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        table = schema.failures
        query = (
            select(table.c.reason_class, func.count())
            .where(table.c.destination.in_(destinations))
            .group_by(table.c.reason_class)
        )
        with self.engine.connect() as conn:
            return {reason: int(n) for reason, n in conn.execute(query)}

    def ledger_counts(self, destinations: Sequence[str]) -> dict[str, dict[str, int]]:
        table = schema.ledger
        query = (
            select(table.c.destination, table.c.status, func.count())
            .where(table.c.destination.in_(destinations))
            .group_by(table.c.destination, table.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for destination, status, n in conn.execute(query):
                out.setdefault(destination, {})[status] = int(n)
        return out
