"""``status`` reads the state database and never creates, writes or migrates it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli import main
from crmsync.errors import StateError
from state.migrate import newest_revision
from state.store import Store
from tests.e2e import make_site


def _status(config: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["status", "--config", str(config), *extra])
    return result.exit_code, result.stdout, result.stderr


def _revision(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return str(found)


def _set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_a_missing_sqlite_database_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "not" / "here.db"
    site = make_site(tmp_path / "site", f"sqlite:///{db}", customers=20)
    code, out, err = _status(site.config)
    assert code == 3, out + err
    assert f"no state database at {db}" in err
    assert "run `crmsync run` or `crmsync migrate` first" in err
    assert "Traceback" not in err
    assert not db.exists() and not db.parent.exists()


def test_a_database_in_memory_has_nothing_to_show(tmp_path: Path) -> None:
    site = make_site(tmp_path, "sqlite://", customers=20)
    code, _, err = _status(site.config)
    assert code == 3 and "in memory" in err


def test_status_changes_no_byte_of_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    site = make_site(tmp_path, f"sqlite:///{db}", customers=50)
    site.run_json()
    Store(f"sqlite:///{db}").close()  # checkpointed: the whole database is in the file
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, _ = _status(site.config, "--json")
    assert code == 0
    assert json.loads(out)[0]["runs"][0]["status"] == "succeeded"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert (
        not (tmp_path / "state.db-wal").exists() or not (tmp_path / "state.db-wal").stat().st_size
    )


def test_a_read_only_file_in_a_read_only_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "state.db"
    site = make_site(tmp_path, f"sqlite:///{db}", customers=50)
    site.run_json()
    Store(f"sqlite:///{db}").close()
    for leftover in ("state.db-wal", "state.db-shm"):
        (tmp_path / leftover).unlink(missing_ok=True)
    db.chmod(0o444)
    # the directory is not writable either (tests may run as root, who may write
    # anywhere, so the check that decides it answers as it would for anyone else)
    real_access = os.access
    monkeypatch.setattr(
        "state.readonly.os.access",
        lambda path, mode: False if Path(path) == tmp_path else real_access(path, mode),
    )
    code, out, err = _status(site.config)
    assert code == 0, err
    assert "succeeded" in out


def test_the_read_only_store_refuses_writes(state_url: str) -> None:
    Store(state_url).close()
    store = Store(state_url, read_only=True)
    try:
        with (
            pytest.raises(sa.exc.DBAPIError, match=r"read.?only"),
            store.engine.begin() as conn,
        ):
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'x'"))
        assert store.runs() == []
    finally:
        store.close()
    assert _revision(state_url) == newest_revision()


def test_an_older_schema_is_reported_with_what_to_run_and_left_as_it_is(
    tmp_path: Path, state_url: str
) -> None:
    site = make_site(tmp_path, state_url, customers=20)
    site.run_json()
    _set_revision(state_url, "0006")
    code, out, err = _status(site.config)
    assert code == 3, out
    assert "schema revision 0006, older than this crmsync's" in err
    assert "run `crmsync migrate`" in err
    assert _revision(state_url) == "0006"  # not migrated


def test_a_database_without_the_schema_is_not_given_one(tmp_path: Path, state_url: str) -> None:
    engine = sa.create_engine(state_url)
    with engine.begin() as conn:  # a database that exists, but is not crmsync's (yet)
        conn.execute(sa.text("CREATE TABLE unrelated (id integer)"))
    engine.dispose()
    site = make_site(tmp_path, state_url, customers=20)
    code, _, err = _status(site.config)
    assert code == 3
    assert "holds no crmsync schema yet" in err
    with pytest.raises(StateError, match="no crmsync schema"):
        Store(state_url, read_only=True)
    engine = sa.create_engine(state_url)
    assert not sa.inspect(engine).has_table("alembic_version")
    engine.dispose()
