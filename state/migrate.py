"""Schema migrations with Alembic, run in-process on the store's own connection.

Every run opens the store, and so asks whether the schema is current. Importing Alembic
and scanning its scripts costs about a quarter of a second, which is most of a no-change
run's own work; so the common answer ("already at the newest revision") is read from the
``alembic_version`` table directly, and Alembic is loaded only to actually migrate. The
migrations are one numbered chain (``0001_...``, ``0002_...``), so the newest revision is
the highest number among the script files (``tests/test_store.py`` holds this to
Alembic's own answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from crmsync.errors import StateError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str = "") -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "state/migrations has no revisions"
    return head


def newest_revision() -> str:
    """The newest revision by the scripts' numbering, without loading Alembic."""
    numbers = [p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py")]
    assert numbers, "state/migrations has no revisions"
    return max(numbers)


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, or None (no table yet: a new database)."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def require_current(engine: Engine, url: str) -> None:
    """For a reader that must not migrate (``status``): the database's schema is this
    code's, or a ``StateError`` says what it is and what to run. The tables of an older
    schema lack columns the queries read, so it is refused, not read in part."""
    with engine.connect() as connection:
        stored = None
        if inspect(connection).has_table("alembic_version"):
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
            stored = str(rows[0][0]) if len(rows) == 1 else None
    newest = newest_revision()
    where = make_url(url).render_as_string()  # the password hidden
    if stored is None:
        raise StateError(
            f"the state database {where} holds no crmsync schema yet; "
            "run `crmsync run` or `crmsync migrate` first (or check state.url)"
        )
    if stored < newest:
        raise StateError(
            f"the state database {where} is at schema revision {stored}, older than this "
            f"crmsync's {newest}; run `crmsync migrate` to bring it up to date (the next "
            "`crmsync run` also does)"
        )
    if stored > newest:
        raise _newer(where, stored, newest)


def _newer(where: str, stored: str, newest: str) -> StateError:
    """A database a newer crmsync migrated: this code neither reads nor migrates it."""
    return StateError(
        f"the state database {where} is at schema revision {stored}, newer than this "
        f"crmsync's {newest}: a newer crmsync migrated it; upgrade crmsync here too"
    )


_MIGRATE_LOCK = 0x63726D73_6D696772  # "crmsmigr": the advisory lock a migration holds


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest schema; returns (revision before, revision after)."""
    stored, newest = _stored_revision(engine), newest_revision()
    if stored is not None and stored == newest:
        return stored, stored
    if stored is not None and stored > newest:  # Alembic would fail on a revision unknown here
        raise _newer(engine.url.render_as_string(), stored, newest)  # the password hidden
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # two processes starting on an empty database (two `serve` hosts) would both
            # create the tables: the second waits here, then finds the schema current
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
        before = current_revision(connection)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = current_revision(connection)  # not head_revision(): no second script scan
    assert after is not None, "state/migrations has no revisions"
    return before, after
