"""Secrets out of logs: every URL, header and body the seam logs goes through a Redactor.

Bodies are not logged at all, only summarised (``summary``: size and shape), since they
carry customers' personal data; ``Redactor.body`` stays for callers that must quote one.

Two nets: the literal secrets a connector hands over (and their URL-encoded forms), and
values under names that are secret by nature (Authorization headers, ``api_key`` query
parameters), so a secret nobody registered — an OAuth2 access token — is caught as well.
httpx's own request log line carries the full URL, so a filter on its logger applies the
union of all registered secrets too.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

import httpx

from crmsync.personal import mask_text

MASK = "***"
_SUMMARY_KEYS = 8  # top-level keys named in a body's summary
MIN_SECRET = 6  # shorter "secrets" would mask ordinary words and cannot be kept secret anyway
_SECRET_NAME = re.compile(
    r"(secret|passw|api[-_]?key|apikey|access[-_]?token|refresh[-_]?token|id[-_]?token|"
    r"^token$|^key$|signature|^sig$|consumer[-_]?key|authorization|^x-auth|cookie|session)",
    re.IGNORECASE,
)
_SECRET_HEADER = re.compile(
    r"(token|key|secret|auth|session|cookie|signature|passw|credential)", re.IGNORECASE
)
_QUERY_PAIR = re.compile(r"([?&;])([^=&#;\s]+)=([^&#;\s]*)")
_JSON_PAIR = re.compile(r'("([^"]+)"\s*:\s*)"((?:[^"\\]|\\.)*)"')
_FORM_PAIR = re.compile(r"(^|&)([^=&\s]+)=([^&\s]*)")


def is_secret_name(name: str) -> bool:
    """Query parameters and JSON keys whose values are secret by nature."""
    return bool(_SECRET_NAME.search(name))


def is_secret_header(name: str) -> bool:
    """Headers are stricter: any header naming a token, key or secret is masked whole."""
    return bool(_SECRET_HEADER.search(name))


class Redactor:
    """Replaces known secrets, and values under secret-looking names, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if len(secret) < MIN_SECRET:
            return
        with self._lock:
            self._secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})

    def discard(self, secret: str) -> None:
        """Forgets a secret that is no longer valid (an expired token), so the set stays small."""
        with self._lock:
            self._secrets.difference_update({secret, quote(secret, safe=""), quote_plus(secret)})

    def text(self, value: str) -> str:
        """Masks every known secret in free text (bodies, messages)."""
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def url(self, value: httpx.URL | str) -> str:
        """Masks known secrets and the values of secret-named query parameters."""
        text = self.text(str(value))
        return _QUERY_PAIR.sub(_mask_pair, text)

    def headers(self, headers: Mapping[str, str] | httpx.Headers) -> dict[str, str]:
        return {
            name: MASK if is_secret_header(name) else self.text(value)
            for name, value in headers.items()
        }

    def body(self, value: bytes | str, limit: int = 500) -> str:
        """A redacted, truncated view of a body for debug logs."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        text = self.text(text)
        text = _JSON_PAIR.sub(_mask_json_pair, text)
        text = _FORM_PAIR.sub(_mask_pair_form, text)
        if len(text) > limit:
            text = f"{text[:limit]}... ({len(text)} characters)"
        return text


def summary(value: bytes | str) -> str:
    """A body's size and shape for debug logs, never its content (a body carries
    customers' e-mails, names and phones): ``2,345 bytes, JSON object: members (500
    items), update_existing``. Key names are masked as text (an API may key by e-mail)."""
    raw = value.encode("utf-8", "replace") if isinstance(value, str) else value
    size = f"{len(raw):,} bytes"
    try:
        parsed = json.loads(raw)
    except ValueError:
        return size
    if isinstance(parsed, list):
        return f"{size}, JSON list of {len(parsed):,} items"
    if not isinstance(parsed, dict):
        return f"{size}, JSON {type(parsed).__name__}"
    keys = [
        f"{mask_text(str(key))} ({len(item):,} items)"
        if isinstance(item, list | dict)
        else mask_text(str(key))
        for key, item in list(parsed.items())[:_SUMMARY_KEYS]
    ]
    more = f", {len(parsed) - _SUMMARY_KEYS} more keys" if len(parsed) > _SUMMARY_KEYS else ""
    return f"{size}, JSON object: {', '.join(keys)}{more}"


def _mask_pair(match: re.Match[str]) -> str:
    sep, name, value = match.group(1), match.group(2), match.group(3)
    return f"{sep}{name}={MASK}" if is_secret_name(name) and value else match.group(0)


def _mask_pair_form(match: re.Match[str]) -> str:
    return _mask_pair(match)


def _mask_json_pair(match: re.Match[str]) -> str:
    prefix, name = match.group(1), match.group(2)
    return f'{prefix}"{MASK}"' if is_secret_name(name) else match.group(0)


class _RedactingFilter(logging.Filter):
    """Rewrites records of third-party loggers (httpx) through the shared redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redactor.url(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


GLOBAL = Redactor()
_installed = False
_install_lock = threading.Lock()


def register(secrets: Iterable[str]) -> None:
    """Adds secrets to the process-wide redactor used for httpx's own log lines."""
    global _installed  # noqa: PLW0603 - one filter per process, installed on first use
    for secret in secrets:
        GLOBAL.add(secret)
    with _install_lock:
        if not _installed:
            for name in ("httpx", "httpcore"):
                logging.getLogger(name).addFilter(_RedactingFilter(GLOBAL))
            _installed = True
