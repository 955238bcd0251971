"""A corpus of broken inputs driven through the CLI: no traceback, ever.

Each case is something an operator gets wrong (a configuration, the environment, an
argument, a signal). Each must end with one message that names the exact key or
variable at fault, the documented exit code, and no Python traceback on stdout or
stderr. Configurations and arguments run in-process through click's CliRunner (which
sets the environment for the call too); signals need a real process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main

ROOT = Path(__file__).resolve().parent.parent
KEY = "0123456789abcdef0123456789abcdef"

BASE = """
default_segments = true

[state]
url = "sqlite:///{tmp}/state.db"

[defaults]
region = "TR"
timezone = "Europe/Istanbul"
currency = "TRY"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{root}/sample_data/customers.csv"
[sources.shop.customers.columns]
external_id = "customer_id"
region = "district"

[destinations.out]
kind = "outbox"
directory = "{tmp}/outbox"
batch_size = 500

[segments.big]
rule = "spent_30d > 500"

[pipelines.p]
sources = ["shop"]
destinations = ["out"]
max_attempts = 5
lookback_minutes = 10

[pipelines.p.profile]
windows_days = [30, 90, 365]

[pipelines.p.profile.rfm]
recency_days = [30, 90, 180, 365]
"""

MAILCHIMP = """
[destinations.mc]
kind = "mailchimp"
api_key = "${{MAILCHIMP_KEY}}"
list_id = "abc123"
"""

WOO = """
[sources.woo]
kind = "rest"
preset = "woocommerce"
base_url = "https://shop.example.com"
[sources.woo.auth]
kind = "basic"
username = "ck"
password = "cs"
"""


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...] = ("check", "--offline")
    edit: tuple[tuple[str, str], ...] = ()  # (old, new) replacements in BASE
    append: str = ""
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2
    named: tuple[str, ...] = ()  # every one must appear in the output
    absent: tuple[str, ...] = ()  # none may appear in the output
    config: bool = True  # pass --config


def _r(old: str, new: str) -> tuple[tuple[str, str], ...]:
    return ((old, new),)


CASES = [
    # values the core refuses, each under the key written in the file (with its line)
    Case(
        "region name",
        edit=_r('region = "TR"', 'region = "Turkey"'),
        named=("defaults.region (crmsync.toml:8)", "'TR'"),
    ),
    Case(
        "currency",
        edit=_r('currency = "TRY"', 'currency = "TL"'),
        named=("defaults.currency (crmsync.toml:10)",),
        absent=("pipelines.p.currency",),
    ),
    Case(
        "pipeline currency",
        append='[pipelines.p2]\nsources = ["shop"]\n'
        'destinations = ["out2"]\ncurrency = "XYZ"\n[destinations.out2]\nkind = "outbox"\n',
        named=("pipelines.p2.currency",),
    ),
    Case(
        "time zone",
        edit=_r('timezone = "Europe/Istanbul"', 'timezone = "Mars/Base"'),
        named=("defaults.timezone", "Mars/Base"),
    ),
    Case(
        "source time zone",
        edit=_r('kind = "files"', 'kind = "files"\ntimezone = "Moon/X"'),
        named=("sources.shop.timezone",),
    ),
    Case(
        "state url mysql",
        edit=_r('url = "sqlite:///{tmp}/state.db"', 'url = "mysql://u@h/db"'),
        named=("state.url (crmsync.toml:5)", "SQLite or PostgreSQL"),
    ),
    Case(
        "state url postgres",
        edit=_r('url = "sqlite:///{tmp}/state.db"', 'url = "postgres://u:secret@h/db"'),
        named=("state.url", "postgresql://"),
        absent=("secret",),
    ),
    Case(
        "state url not a url",
        edit=_r('url = "sqlite:///{tmp}/state.db"', 'url = "state.db"'),
        named=("state.url", "not a database URL"),
    ),
    # quoted numbers and booleans are refused, not coerced
    Case(
        "quoted batch size",
        edit=_r("batch_size = 500", 'batch_size = "500"'),
        named=("destinations.out.batch_size (crmsync.toml:23)", "without quotes"),
    ),
    Case(
        "quoted boolean",
        edit=_r("default_segments = true", 'default_segments = "yes"'),
        named=("default_segments (crmsync.toml:2)", "true or false"),
    ),
    Case(
        "quoted max attempts",
        edit=_r("max_attempts = 5", 'max_attempts = "5"'),
        named=("pipelines.p.max_attempts",),
    ),
    Case(
        "quoted lookback",
        edit=_r("lookback_minutes = 10", 'lookback_minutes = "10"'),
        named=("pipelines.p.lookback_minutes",),
    ),
    Case(
        "quoted window",
        edit=_r("windows_days = [30, 90, 365]", 'windows_days = ["30"]'),
        named=("pipelines.p.profile.windows_days[0]",),
    ),
    Case(
        "boolean workers",
        edit=_r("max_attempts = 5", "max_attempts = 5\nworkers = true"),
        named=("pipelines.p.workers",),
    ),
    Case(
        "rfm order",
        edit=_r("recency_days = [30, 90, 180, 365]", "recency_days = [90, 30]"),
        named=("pipelines.p.profile.rfm.recency_days",),
    ),
    # unknown keys, each with the key it was probably meant to be
    Case(
        "unknown top key",
        edit=_r("default_segments = true", "default_segment = true"),
        named=("default_segment", "did you mean 'default_segments'"),
    ),
    Case(
        "unknown state key",
        edit=_r('url = "sqlite', 'ulr = "sqlite'),
        named=("state.ulr", "did you mean 'url'"),
    ),
    Case(
        "unknown destination key",
        edit=_r("batch_size = 500", "bach_size = 500"),
        named=("destinations.out.bach_size (crmsync.toml:23)", "did you mean 'batch_size'"),
    ),
    Case(
        "unknown pipeline key",
        edit=_r("max_attempts = 5", "max_attempts = 5\ndestination = []"),
        named=("pipelines.p.destination", "did you mean 'destinations'"),
    ),
    Case(
        "unknown profile key",
        edit=_r("windows_days =", "window_days ="),
        named=("pipelines.p.profile.window_days", "'windows_days'"),
    ),
    Case(
        "woocommerce auth kind",
        append=WOO,
        named=("sources.woo.auth.kind",),
        absent=("auth.basic",),
    ),
    # references and required keys
    Case(
        "missing source",
        edit=_r('sources = ["shop"]', 'sources = ["shop", "nope"]'),
        named=("pipelines.p.sources", "'nope'"),
    ),
    Case(
        "missing destinations",
        edit=_r('destinations = ["out"]\n', ""),
        named=("pipelines.p.destinations", "required"),
    ),
    Case(
        "unknown kind",
        edit=_r('kind = "outbox"', 'kind = "outbx"'),
        named=("destinations.out.kind", "outbx"),
    ),
    Case("no kind", edit=_r('kind = "files"', ""), named=("sources.shop.kind",)),
    Case(
        "bad cron",
        edit=_r("max_attempts = 5", 'max_attempts = 5\nschedule = "often"'),
        named=("pipelines.p.schedule",),
    ),
    Case(
        "mapping file missing",
        edit=_r('kind = "outbox"', 'kind = "outbox"\nmapping = "no.toml"'),
        named=("destinations.out.mapping", "not found"),
    ),
    # segment rules: a caret, a limit, a pointer to the command
    Case(
        "deep parentheses",
        edit=_r('"spent_30d > 500"', '"' + "(" * 2000 + "true" + ")" * 2000 + '"'),
        named=("segments.big.rule", "nests more than", "^"),
    ),
    Case(
        "huge duration",
        edit=_r('"spent_30d > 500"', '"days(99999999999999) < now"'),
        named=("segments.big.rule", "out of range", "^"),
    ),
    Case(
        "far past",
        edit=_r('"spent_30d > 500"', "\"datetime('9999-12-01T00:00:00Z') + days(3000) < now\""),
        named=("segments.big.rule", "out of range"),
    ),
    Case(
        "unknown field",
        edit=_r('"spent_30d > 500"', '"spent_30 > 500"'),
        named=("segments.big.rule", "did you mean 'spent_30d'", "`crmsync fields`"),
    ),
    # secrets: one root cause, one message
    Case(
        "unset secret",
        append=MAILCHIMP,
        named=("destinations.mc.api_key", "MAILCHIMP_KEY"),
        absent=("data-centre",),
    ),
    Case(
        "key without data centre",
        append=MAILCHIMP,
        env={"MAILCHIMP_KEY": KEY},
        named=("destinations.mc.api_key", "data-centre"),
        absent=(KEY,),
    ),
    # the environment: unknown overrides, and errors naming the variable
    Case(
        "misspelt override",
        env={"CRMSYNC_STAT__URL": "sqlite:///x.db"},
        named=("CRMSYNC_STAT__URL", "did you mean CRMSYNC_STATE__URL"),
    ),
    Case(
        "single underscore override",
        env={"CRMSYNC_STATE_URL": "sqlite:///x.db"},
        named=("CRMSYNC_STATE_URL", "CRMSYNC_STATE__URL"),
    ),
    Case(
        "override unknown key",
        env={"CRMSYNC_STATE__URI": "sqlite:///x.db"},
        named=("CRMSYNC_STATE__URI",),
    ),
    Case(
        "override bad url",
        env={"CRMSYNC_STATE__URL": "mysql://u@h/db"},
        named=("state.url (from CRMSYNC_STATE__URL)",),
    ),
    Case(
        "override bad region",
        env={"CRMSYNC_DEFAULTS__REGION": "Turkey"},
        named=("defaults.region (from CRMSYNC_DEFAULTS__REGION)",),
    ),
    Case(
        "override bad number",
        env={"CRMSYNC_PIPELINES__P__MAX_ATTEMPTS": "many"},
        named=("pipelines.p.max_attempts (from CRMSYNC_PIPELINES__P__MAX_ATTEMPTS)",),
    ),
    # files and arguments
    Case("invalid toml", edit=_r("[segments.big]", "[segments.big"), named=("not valid TOML",)),
    Case(
        "config not found",
        args=("check", "--offline", "--config", "/nonexistent/c.toml"),
        config=False,
        named=("/nonexistent/c.toml", "not found"),
    ),
    Case(
        "unreadable column",
        args=("check", "--offline"),
        edit=_r('external_id = "customer_id"', 'external_id = "customer_idx"'),
        named=("sources.shop.customers.columns.external_id", "customer_idx"),
    ),
    Case(
        "fields windows",
        args=("fields", "--windows", "7,x"),
        config=False,
        named=("--windows", "'x'"),
    ),
    Case(
        "fields zero window", args=("fields", "--windows", "0"), config=False, named=("--windows",)
    ),
    Case("bad as-of", args=("plan", "--as-of", "yesterday"), named=("--as-of",)),
    Case(
        "backfill needs a mode", args=("backfill", "--pipeline", "p"), named=("--since", "--full")
    ),
    Case("no such pipeline", args=("plan", "--pipeline", "nope"), named=("pipelines", "'nope'")),
    Case(
        "negative sample",
        args=("sample", "--customers", "-1", "--out", "x"),
        config=False,
        named=("--customers",),
    ),
    Case(
        "unwritable sample",
        args=("sample", "--customers", "1", "--out", "/proc/crmsync"),
        config=False,
        code=1,
        named=("/proc/crmsync",),
    ),
    Case(
        "state database unreachable",
        args=("status",),
        env={"CRMSYNC_STATE__URL": "postgresql://u:secret@127.0.0.1:1/db"},
        code=3,
        named=("state.url",),
        absent=("secret",),
    ),
]


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_broken_input_gives_one_message_naming_its_cause(case: Case, tmp_path: Path) -> None:
    text = BASE
    for old, new in case.edit:
        assert old in text, old
        text = text.replace(old, new)
    text += case.append
    path = tmp_path / "crmsync.toml"
    path.write_text(text.format(tmp=tmp_path, root=ROOT), encoding="utf-8")
    args = [*case.args, "--config", str(path)] if case.config else list(case.args)
    env = {"MAILCHIMP_KEY": None, **case.env}
    result = CliRunner().invoke(main, args, env=env)
    output = result.stdout + result.stderr
    assert not isinstance(result.exception, AssertionError), output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == case.code, output
    for words in case.named:
        assert words in output, output
    for words in case.absent:
        assert words not in output, output


# --- signals: a real process group, as a terminal's Ctrl-C reaches it ----------------

# Ctrl-C is Python's KeyboardInterrupt in the parent, as in a terminal, even when the
# test process happens to ignore SIGINT (an ignored signal stays ignored through exec)
CHILDREN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from crmsync import child
workers = [child.start(f"worker {i}", "engine.parallel:worker_main") for i in range(2)]
try:  # the signal may land as soon as "started" is out
    print("started", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("parent interrupted", file=sys.stderr)
"""


def _interrupt(args: list[str], wait_for: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == wait_for
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def test_ctrl_c_while_workers_start_leaves_no_traceback_from_them(tmp_path: Path) -> None:
    """Each child is still importing when the whole group gets SIGINT: only the parent
    handles it; the children ignore it and leave quietly once their parent is gone."""
    done = _interrupt([sys.executable, "-c", CHILDREN], "started", ROOT)
    assert "parent interrupted" in done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr


def test_ctrl_c_during_a_run_with_workers_exits_130_with_one_message(tmp_path: Path) -> None:
    config = tmp_path / "crmsync.toml"
    text = BASE.replace("max_attempts = 5", "max_attempts = 5\nworkers = 2")
    config.write_text(text.format(tmp=tmp_path, root=ROOT), encoding="utf-8")
    starter = (
        "import sys; from cli import main; print('go', flush=True); "
        f"main(['run', '--config', {str(config)!r}])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", starter],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "go"
    deadline = time.monotonic() + 30
    while not (tmp_path / "state.db").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err
