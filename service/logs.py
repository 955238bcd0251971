"""The service's logs: one line per record, JSON for machines or text for people, every
line carrying the context of the run it belongs to, and never a secret or a person.

The standard library, not structlog: every module of crmsync already logs through
``logging`` (and so do httpx, alembic and APScheduler), the masking of personal data is a
``logging.Filter`` (``crmsync.log_setup.PersonalData``) that must see every record of
every logger, and a JSON line is a dozen lines of formatter. structlog would add a
dependency and a second pipeline beside the one every record already passes through.

Context: ``bind(store=..., pipeline=..., run_id=...)`` around a run puts those fields on
every line logged inside it, through a ``contextvars`` variable (so runs of different
pipelines in parallel threads keep theirs apart). The HTTP seam runs each try in the
context its client was made in (``connectors.http.telemetry``), so the lines its worker
threads log carry the run's fields too.

Secrets: the configuration knows its secrets (values of keys named like a key, token,
secret or password, secret-typed values, values read from ``${VAR}`` references, the
password of a URL); ``register_secrets(secrets_of(config))`` hands them to the filter,
which also applies the HTTP seam's own registry (``connectors.http.redact.GLOBAL``) and
masks the password of any URL it sees. Personal data goes through ``PersonalData`` first.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import BaseModel, SecretBytes, SecretStr

from connectors.http import redact
from crmsync.config import Config
from crmsync.log_setup import FORMAT, Masking, PersonalData

__all__ = [
    "ContextFields",
    "JsonFormatter",
    "LogContext",
    "Secrets",
    "TextFormatter",
    "bind",
    "configure",
    "context",
    "mask_secrets",
    "prefer",
    "register_secrets",
    "secrets_of",
]

# the order fields are shown in; others follow by name
FIELDS = ("store", "pipeline", "run_id", "kind", "source", "destination")
# library loggers whose INFO lines are noise for an operator: shown from -v (apscheduler)
# or -vv (httpx's one line per request) on
_NOISY = {
    "apscheduler": 1,
    "alembic.runtime.migration": 1,
    "httpx": 2,
    "httpcore": 2,
    "alembic.runtime.plugins": 2,
}
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/:@]*):([^\s/@]+)@")
_SECRET_KEY = re.compile(r"(key|token|secret|passw|credential)", re.IGNORECASE)
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


class LogContext:
    """The fields of one ``bind``, over those of the bind it is inside. Fields known only
    later (a run's id, given once the run is recorded) are added with ``update``."""

    def __init__(self, fields: Mapping[str, object], parent: LogContext | None) -> None:
        self._parent = parent
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._lock = threading.Lock()

    def update(self, **fields: object) -> None:
        with self._lock:
            self._fields.update({k: v for k, v in fields.items() if v is not None})

    def fields(self) -> dict[str, object]:
        found = self._parent.fields() if self._parent is not None else {}
        with self._lock:
            found.update(self._fields)
        return found


_CURRENT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar(
    "crmsync_log_context", default=None
)


@contextmanager
def bind(**fields: object) -> Iterator[LogContext]:
    """Every line logged inside the block (in this thread, and in HTTP clients made in it)
    carries ``fields``; a field set to None is left out."""
    found = LogContext(fields, _CURRENT.get())
    token = _CURRENT.set(found)
    try:
        yield found
    finally:
        _CURRENT.reset(token)


def context() -> dict[str, object]:
    """The fields bound where this is called (empty outside any ``bind``)."""
    found = _CURRENT.get()
    return found.fields() if found is not None else {}


# -- secrets --------------------------------------------------------------------------

_SECRETS = redact.Redactor()


def register_secrets(values: Iterable[str]) -> None:
    """Values never to be logged (shorter than 6 characters: ignored, see ``redact``)."""
    for value in values:
        _SECRETS.add(value)


def mask_secrets(text: str) -> str:
    text = _SECRETS.text(redact.GLOBAL.text(text))
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{redact.MASK}@", text)


def secrets_of(config: Config) -> list[str]:
    """The secrets a configuration holds: secret-typed values, values of secret-named
    keys, URL passwords, and every value read from a ``${VAR}`` reference of its file."""
    found: list[str] = []
    _walk(config.settings, "", found)
    for spec in [*config.sources.values(), *config.destinations.values()]:
        _walk(spec.config, "", found)
    _walk(config.state_url, "url", found)
    try:
        text = config.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    for name in _ENV_REFERENCE.findall(text):
        value = os.environ.get(name)
        if value:
            found.append(value)
    return sorted(set(found))


def _walk(value: object, key: str, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        found.append(value.get_secret_value())
    elif isinstance(value, SecretBytes):
        found.append(value.get_secret_value().decode("utf-8", "replace"))
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk(getattr(value, name), name, found)
    elif isinstance(value, Mapping):
        for name, inner in value.items():
            _walk(inner, str(name), found)
    elif isinstance(value, list | tuple):
        for inner in value:
            _walk(inner, key, found)
    elif isinstance(value, str):
        if _SECRET_KEY.search(key) or redact.is_secret_name(key):
            found.append(value)
        found.extend(m.group(2) for m in _URL_PASSWORD.finditer(value))


# -- filters and formatters -----------------------------------------------------------


class ContextFields(logging.Filter):
    """Puts the bound fields on the record (as ``record.context``), in the thread that
    logs it, before the handler hands it on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            record.context = context()
        return True


class Secrets(Masking):
    """Masks every known secret and URL password in a record's message, exception, stack
    and context (after ``PersonalData``, which has merged the arguments into the message)."""

    def mask(self, text: str) -> str:
        return mask_secrets(text)

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        fields = getattr(record, "context", None)
        if isinstance(fields, dict):
            record.context = {
                k: v if isinstance(v, int | float | bool) else mask_secrets(str(v))
                for k, v in fields.items()
            }
        return True


def _ordered(fields: Mapping[str, object]) -> list[tuple[str, object]]:
    first = [(k, fields[k]) for k in FIELDS if k in fields]
    return first + sorted((k, v) for k, v in fields.items() if k not in FIELDS)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the bound
    fields, and the exception's text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _ordered(getattr(record, "context", None) or {}):
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The CLI's line, with the bound fields after it: ``... [store=acme pipeline=main]``."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _ordered(getattr(record, "context", None) or {})
        if not fields:
            return text
        shown = " ".join(f"{k}={v}" for k, v in fields)
        head, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{head} [{shown}]{newline}{rest}"


def configure(json: bool | None, verbose: int, stream: IO[str] | None = None) -> logging.Handler:
    """The service's logging on ``stream`` (stderr): JSON when ``json`` is True, or when
    it is None and the stream is not a terminal; text otherwise. INFO by default (a
    service says what it runs), DEBUG from ``-v``. Replaces the handler the CLI installed
    (``crmsync.log_setup``) or an earlier call did; leaves other handlers alone."""
    out = stream if stream is not None else sys.stderr
    as_json = not _is_terminal(out) if json is None else json
    _LAST.update(auto=json is None, verbose=verbose, stream=out)
    root = logging.getLogger()
    for old in list(root.handlers):
        if any(isinstance(f, PersonalData | Secrets) for f in old.filters):
            root.removeHandler(old)
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    for part in (ContextFields(), PersonalData(), Secrets()):
        handler.addFilter(part)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 1 else logging.INFO)
    for name, shown_from in _NOISY.items():
        logging.getLogger(name).setLevel(
            logging.NOTSET if verbose >= shown_from else logging.WARNING
        )
    return handler


_LAST: dict[str, Any] = {}  # the last ``configure`` call: whether it chose the format itself


def prefer(log_format: str) -> None:
    """The configuration's ``[observe] log_format`` ("json", "text" or "auto"), known once
    it has loaded: applied when the command line left the choice to ``configure``."""
    if log_format != "auto" and _LAST.get("auto"):
        configure(log_format == "json", int(_LAST["verbose"]), _LAST["stream"])
        _LAST["auto"] = True  # still the configuration's choice, not the command line's


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
