"""``service.logs``: JSON or text lines carrying the bound run context, and never a
secret of the configuration or a person's e-mail or phone, at any level."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.resolve import load_config
from service import logs
from tests.e2e import make_site

MC_KEY = "d1a2b3c4d5e6f708192a3b4c5d6e7f80-us7"
SMTP_PASSWORD = "Smtp-Pass-Chalcedony-5521"
DB_PASSWORD = "Pw-Obsidian-4471"
HOOK_TOKEN = "Webhook-Tanzanite-88"
WEBHOOK = f"https://hooks.example.test/services/T0/B0/{HOOK_TOKEN}"  # the URL is the secret
SECRETS = (MC_KEY, SMTP_PASSWORD, DB_PASSWORD, WEBHOOK)
PERSON = "zeynep.kartal@example.com"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_context_of_their_thread(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure(None, 0, out)  # not a terminal: JSON
    log = logging.getLogger("crmsync.run")
    log.info("outside")
    with logs.bind(store="acme", pipeline="main") as context:
        log.info("started")
        context.update(run_id=12)
        with logs.bind(destination="mc"):
            log.warning("pushing")
        elsewhere = threading.Thread(target=log.info, args=("from a bare thread",))
        elsewhere.start()
        elsewhere.join()
    log.info("after")
    found = lines(out)
    assert [(line["message"], line["level"]) for line in found] == [
        ("outside", "INFO"),
        ("started", "INFO"),
        ("pushing", "WARNING"),
        ("from a bare thread", "INFO"),
        ("after", "INFO"),
    ]
    assert "store" not in found[0] and "store" not in found[3] and "store" not in found[4]
    assert {k: found[1][k] for k in ("store", "pipeline", "logger")} == {
        "store": "acme",
        "pipeline": "main",
        "logger": "crmsync.run",
    }
    assert "run_id" not in found[1]
    assert (found[2]["run_id"], found[2]["destination"], found[2]["store"]) == (12, "mc", "acme")
    assert str(found[0]["time"]).endswith("+00:00")


def test_text_on_a_terminal_with_the_context_after_the_message(restore_root: None) -> None:
    out = Terminal()
    logs.configure(None, 1, out)
    with logs.bind(store="acme", pipeline="main", run_id=3):
        logging.getLogger("crmsync.run").debug("phase pull took 1.2 s")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("crmsync.run").exception("run failed")
    text = out.getvalue()
    first, second = text.splitlines()[:2]
    assert first.endswith(
        "DEBUG crmsync.run: phase pull took 1.2 s [store=acme pipeline=main run_id=3]"
    )
    assert second.endswith("ERROR crmsync.run: run failed [store=acme pipeline=main run_id=3]")
    assert "Traceback" in text and "ValueError: boom" in text
    assert not text.lstrip().startswith("{")


def test_json_or_text_as_configured_whatever_the_stream(restore_root: None) -> None:
    on_terminal = Terminal()
    logs.configure(True, 0, on_terminal)
    logging.getLogger("crmsync").warning("x")
    assert json.loads(on_terminal.getvalue())["message"] == "x"
    piped = io.StringIO()
    logs.configure(False, 0, piped)
    logging.getLogger("crmsync").warning("y")
    assert piped.getvalue().rstrip().endswith("WARNING crmsync: y")
    assert len(logging.getLogger().handlers) == 1 or on_terminal.getvalue().count("\n") == 1


@pytest.fixture
def secret_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = make_site(tmp_path, "postgresql://crm:" + DB_PASSWORD + "@db.internal:5432/crm", 5)
    monkeypatch.setenv("T_MC_KEY", MC_KEY)
    monkeypatch.setenv("T_SMTP_PASSWORD", SMTP_PASSWORD)
    site.send_to("mc", 'kind = "mailchimp"\napi_key = "${T_MC_KEY}"\nlist_id = "a1b2c3d4e5"\n')
    with site.config.open("a", encoding="utf-8") as handle:
        handle.write(
            "\n[alerts]\n"
            f'webhook_url = "{WEBHOOK}"\n'
            "[alerts.smtp]\n"
            'host = "mx.example.test"\nsender = "crmsync@example.test"\n'
            'to = ["ops@example.test"]\nusername = "ops"\npassword = "${T_SMTP_PASSWORD}"\n'
        )
    return site.config


def test_the_configuration_knows_its_secrets(secret_config: Path) -> None:
    found = logs.secrets_of(load_config(secret_config))
    for secret in SECRETS:
        assert any(secret in value for value in found), secret
    assert "ops@example.test" not in found and "mx.example.test" not in found


@pytest.mark.parametrize("as_json", [True, False])
def test_no_secret_and_no_person_at_any_level(
    secret_config: Path, restore_root: None, as_json: bool
) -> None:
    logs.register_secrets(logs.secrets_of(load_config(secret_config)))
    out = io.StringIO()
    logs.configure(as_json, 2, out)
    log = logging.getLogger("crmsync.anything")
    with logs.bind(store="acme", pipeline="main", destination=f"mc {MC_KEY}"):
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
            for secret in SECRETS:
                log.log(level, f"in the message {secret} for {PERSON}")
                log.log(level, "as an argument %s for %s", secret, PERSON)
        try:
            raise RuntimeError(f"connect to postgresql://crm:{DB_PASSWORD}@db failed; {MC_KEY}")
        except RuntimeError:
            log.exception("with an exception")
        log.critical("a URL never seen before https://u:Unseen-Garnet-12@h.example/x")
        logging.getLogger("httpx").warning("third party POST %s failed", WEBHOOK)
    text = out.getvalue()
    assert text.count("\n") >= 4 * 4 * 2 + 3  # every line was written
    assert "in the message ***" in text and "RuntimeError" in text
    for value in (*SECRETS, HOOK_TOKEN, "Unseen-Garnet-12", PERSON):
        assert value not in text, value
    assert "z***@e***.com" in text  # masked, not dropped
