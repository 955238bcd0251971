"""Personal data never reaches the logs, at any level: a store whose customers have
distinctive e-mails, names and phones is synced with ``-vv`` (every HTTP exchange logged)
and none of those values appears on stderr, while the run's debug lines do.

The CLI runs in a child process, as an operator runs it, so the logging it sets up (and
its filter, the last line of defence) is the one under test.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.http.redact import summary
from crmsync.log_setup import PersonalData
from crmsync.personal import mask_email, mask_key, mask_phone, mask_text
from tests.e2e import AS_OF, Site, consented, make_site
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake

__all__ = ["mailchimp_fake"]

ROOT = Path(__file__).resolve().parent.parent
NAME, SURNAME, DOMAIN = "Zorvathine", "Quillbeckova", "quillbeck-h1.com"


def distinctive(site: Site) -> tuple[list[str], list[str]]:
    """Gives every customer a distinctive e-mail, name and phone; a few get a broken
    e-mail (quarantined). Returns (values that must not be logged, phones' digits)."""
    path = site.data / "customers.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    emails, phones = [], []
    for i, row in enumerate(rows):
        row["first_name"], row["last_name"] = f"{NAME}{i}", f"{SURNAME}{i}"
        if row["email"]:
            row["email"] = f"kestrel.{i}@{DOMAIN}" if i % 25 else f"kestrel.{i}@@{DOMAIN}"
            emails.append(row["email"])
        if row["phone"]:
            row["phone"] = f"0532 7{i:06d}"
            phones.append(f"5327{i:06d}")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [NAME, SURNAME, "kestrel.", DOMAIN, *emails], phones


def run_vv(site: Site, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli", "-vv", "run", "--config", str(site.config)]
    return subprocess.run(
        [*command, "--as-of", AS_OF, "--json"],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def assert_private(stderr: str, values: list[str], phones: list[str]) -> None:
    leaked = [v for v in values if v.lower() in stderr.lower()]
    leaked += [p for p in phones if p in stderr or p[1:] in stderr]
    assert leaked == [], leaked[:5]


def test_a_debug_run_into_the_outbox_logs_no_personal_data(tmp_path: Path) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=120)
    values, phones = distinctive(site)
    done = run_vv(site)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DEBUG" in done.stderr or "INFO crmsync.run" in done.stderr
    sent = "\n".join(p.read_text(encoding="utf-8") for p in site.outbox.glob("*.jsonl"))
    assert DOMAIN in sent and NAME in sent  # the values were there to leak
    assert_private(done.stderr, values, phones)


def test_a_debug_run_into_mailchimp_logs_exchanges_but_no_personal_data(
    tmp_path: Path, mailchimp_fake: FakeMailchimp
) -> None:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=120)
    values, phones = distinctive(site)
    mailchimp_fake.expect_consented(consented(site.data))
    site.send_to(
        "mc",
        f'kind = "mailchimp"\napi_key = "${{CRMSYNC_TEST_MAILCHIMP_KEY}}"\n'
        f'list_id = "{mailchimp_fake.list_id}"\nbase_url = "{mailchimp_fake.base_url}"\n',
    )
    done = run_vv(site, {"CRMSYNC_TEST_MAILCHIMP_KEY": mailchimp_fake.api_key})
    assert done.returncode in (0, 5), done.stderr[-2000:]
    members = {m["email_address"] for m in mailchimp_fake.audience.members.values()}
    assert any(DOMAIN in email for email in members)  # sent, so there was data to leak
    exchanges = [line for line in done.stderr.splitlines() if "DEBUG crmsync.http" in line]
    assert any(" -> 200 in " in line and "POST" in line for line in exchanges), exchanges[:3]
    assert_private(done.stderr, values, phones)
    assert mailchimp_fake.api_key not in done.stderr


def test_the_filter_masks_messages_arguments_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PersonalData())
    logger = logging.getLogger("tests.log_privacy")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused %s (%s)", "ayse.kaya@example.com", "+90 532 123 45 67")
        logger.warning("person e:mehmet.oz@example.org: bad phone 05321234567")
        try:
            raise ValueError("no such member: ali.veli@example.net")
        except ValueError:
            logger.exception("push failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for value in ("ayse.kaya", "mehmet.oz", "ali.veli", "123 45 67", "05321234567"):
        assert value not in text
    assert "a***@e***.com" in text and "+90********67" in text
    assert "e:m***@e***.org" in text and "a***@e***.net" in text
    assert "ValueError" in text  # the exception is still told, masked


def test_masks_keep_enough_to_tell_values_apart_and_leave_other_numbers() -> None:
    assert mask_email("jane.doe@example.com") == "j***@e***.com"
    assert mask_phone("+905321234512") == "+90********12"
    assert mask_key("e:jane.doe@example.com") == "e:j***@e***.com"
    assert mask_key("p:+905321234512") == "p:+90********12"
    assert mask_key("s:shop:1001") == "s:shop:1001"
    ordinary = "2026-11-01 12:00:00 +03:00: 2,000 records in 0.52 s, run 12, order 10000001"
    assert mask_text(ordinary) == ordinary
    assert mask_text(mask_text("x j@e.com 0532 123 45 67")) == mask_text("x j@e.com 0532 123 45 67")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"members": [{"email_address": "a@b.com"}], "update_existing": true}',
         "{n} bytes, JSON object: members (1 items), update_existing"),
        (b'[{"email": "a@b.com"}, {"email": "c@d.com"}]', "{n} bytes, JSON list of 2 items"),
        (b"email=a%40b.com&name=Ada", "{n} bytes"),
        (b'{"a@b.com": {"status": "ok"}}', "{n} bytes, JSON object: a***@b***.com (1 items)"),
    ],
)  # fmt: skip
def test_bodies_are_summarised_by_size_and_shape_never_content(body: bytes, expected: str) -> None:
    assert summary(body) == expected.format(n=len(body))


def warn_in_child(*_pipes: str) -> None:
    """A child's main that logs what a reader might: a warning naming a person."""
    logging.getLogger("crmsync.reader").warning("person %s refused", "zorvathine@quillbeck-h1.com")
    logging.getLogger("crmsync.reader").info("read 10 records")


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO])
def test_a_child_process_logs_at_its_parents_level_through_the_same_mask(
    capfd: pytest.CaptureFixture[str], level: int
) -> None:
    from crmsync import child

    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        started = child.start("warner", "tests.test_log_privacy:warn_in_child")
    finally:
        root.setLevel(before)
    assert started.process.wait(60) == 0
    started.stop()
    err = capfd.readouterr().err
    assert "refused" in err and "zorvathine@quillbeck-h1.com" not in err
    assert "z***@q***.com" in err
    assert ("read 10 records" in err) is (level <= logging.INFO)
