"""The ``[celery]`` table and what a run on workers requires, without a broker: a bad
broker URL is a configuration error naming its key, the URL's password never shows, a
run or a worker on SQLite state is refused naming ``state.url``, and the Celery app takes
messages late, one at a time, and gives a dead worker's back."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from crmsync.errors import ConfigError
from crmsync.log_setup import PersonalData
from distributed.app import make_app, require_workers
from engine.resolve import load_config
from tests.e2e import make_site

SECRET = "s3cr3t-pa55"


def _configured(tmp_path: Path, table: str, state_url: str | None = None) -> Path:
    site = make_site(tmp_path, state_url or f"sqlite:///{tmp_path / 'state.db'}", customers=5)
    with open(site.config, "a", encoding="utf-8") as handle:
        handle.write(table)
    return site.config


def _issues(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        require_workers(load_config(path))
    return {issue.key: f"{issue.message} | {issue.hint}" for issue in caught.value.issues}


def test_a_broker_crmsync_cannot_use_is_an_error_naming_its_key(tmp_path: Path) -> None:
    path = _configured(tmp_path, '\n[celery]\nbroker_url = "http://127.0.0.1:15672/"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    keys = {issue.key: issue.message for issue in caught.value.issues}
    assert "amqp://" in keys["celery.broker_url"] and "redis://" in keys["celery.broker_url"]


def test_a_shared_budget_that_is_not_redis_is_an_error_naming_its_key(tmp_path: Path) -> None:
    table = '\n[celery]\nbroker_url = "redis://127.0.0.1/0"\nshared_budget = "postgresql://x/y"\n'
    with pytest.raises(ConfigError) as caught:
        load_config(_configured(tmp_path, table))
    keys = {issue.key: issue.message for issue in caught.value.issues}
    assert "redis://" in keys["celery.shared_budget"]


def test_the_broker_password_never_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_RABBIT_PASSWORD", SECRET)
    url = "amqp://crm:${CRMSYNC_TEST_RABBIT_PASSWORD}@127.0.0.1:5672//"
    settings = load_config(_configured(tmp_path, f'\n[celery]\nbroker_url = "{url}"\n'))
    celery = settings.settings.celery
    assert SECRET not in repr(celery) and SECRET not in str(celery)
    assert celery.broker_url is not None
    assert SECRET in celery.broker_url.get_secret_value()  # the worker connects with it


def test_an_environment_variable_sets_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_CELERY__BROKER_URL", "redis://127.0.0.1:6379/3")
    celery = load_config(_configured(tmp_path, "")).settings.celery
    assert celery.broker_url is not None
    assert celery.broker_url.get_secret_value() == "redis://127.0.0.1:6379/3"


def test_workers_need_a_broker_and_postgresql(tmp_path: Path) -> None:
    assert "celery.broker_url" in _issues(_configured(tmp_path / "a", ""))
    on_sqlite = _configured(tmp_path / "b", '\n[celery]\nbroker_url = "redis://127.0.0.1/0"\n')
    found = _issues(on_sqlite)
    assert set(found) == {"state.url"}
    assert "postgresql://" in found["state.url"]


@pytest.mark.parametrize("command", [["run", "--workers", "celery"], ["worker"]])
def test_run_and_worker_refuse_sqlite_state_before_doing_anything(
    tmp_path: Path, command: list[str]
) -> None:
    path = _configured(tmp_path, '\n[celery]\nbroker_url = "redis://127.0.0.1:1/0"\n')
    result = CliRunner().invoke(main, [*command, "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "state.url" in result.output and "PostgreSQL" in result.output
    assert not (tmp_path / "outbox").exists()  # nothing was pushed


def test_the_app_acknowledges_late_one_message_at_a_time(tmp_path: Path) -> None:
    table = (
        '\n[celery]\nbroker_url = "redis://127.0.0.1:6379/0"\nqueue = "shop-a"\n'
        "visibility_timeout_seconds = 600\n"
    )
    app = make_app(load_config(_configured(tmp_path, table)).settings.celery)
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": 600}
    assert conf.task_default_queue == "shop-a"
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    names = {n for n in app.tasks if n.startswith("crmsync.")}
    assert names == {
        "crmsync.pull_stream",
        "crmsync.prepare_destination",
        "crmsync.plan_slice",
        "crmsync.push_batch",
        "crmsync.collect_jobs",
    }


def test_a_worker_masks_personal_data_in_its_log_lines() -> None:
    """Celery sets a worker's logging up itself; crmsync's mask goes on its handlers."""
    from celery import signals

    stream = io.StringIO()
    logger = logging.getLogger("crmsync.test.celery")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        signals.after_setup_logger.send(sender=None, logger=logger)
        logger.warning("person ayse.yilmaz@example.com refused: +905321234567")
    finally:
        logger.removeHandler(handler)
        for found in logging.getLogger().handlers:  # the root's, as a worker would have
            found.filters = [f for f in found.filters if not isinstance(f, PersonalData)]
    text = stream.getvalue()
    assert "ayse.yilmaz@example.com" not in text and "+905321234567" not in text
    assert "refused" in text
