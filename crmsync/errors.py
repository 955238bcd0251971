"""crmsync's exception tree, drawn once here so every layer raises the same kinds.

    CrmsyncError
    ├── ConfigError            the operator must change the configuration; the run stops
    ├── StateError             the state database is unusable (schema, connection)
    ├── ConnectorError         an external system failed as a whole
    │   ├── TransientError     worth retrying: timeouts, 429, 5xx (carries retry_after)
    │   │   └── SendLater      the destination takes no more this run; nothing of the batch sent
    │   └── AuthError          credentials or account settings are wrong (a ConfigError in spirit)
    └── RecordError            one record is bad; it is quarantined and the run goes on

Foreign exceptions (httpx, SQLAlchemy, the Mailchimp SDK) are translated at the boundary
with ``raise X(...) from exc`` so callers never need to know those libraries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class CrmsyncError(Exception):
    """Base of every error crmsync raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # as it is, not through __init__, whose arguments differ from ``args`` in some
        # subclasses: an error raised in a child process is raised again in the run's
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[CrmsyncError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in the configuration: the TOML key path, what is wrong, what to do, and
    where the value came from when that is known (``file.toml:12``, or ``from
    CRMSYNC_STATE__URL`` for an environment override)."""

    key: str
    message: str
    hint: str = ""
    where: str = ""

    def __str__(self) -> str:
        key = f"{self.key} ({self.where})" if self.where else self.key
        text = f"{key}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(CrmsyncError):
    """The configuration is wrong; every issue found is reported at once."""

    def __init__(self, issues: Sequence[ConfigIssue] | str, *, key: str = "", hint: str = ""):
        if isinstance(issues, str):
            issues = [ConfigIssue(key=key or "<config>", message=issues, hint=hint)]
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class StateError(CrmsyncError):
    """The state database cannot be used as it is."""


class ConnectorError(CrmsyncError):
    """An external system (source or destination) failed as a whole."""


class TransientError(ConnectorError):
    """A failure worth retrying later: timeout, connection reset, 429, 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SendLater(TransientError):
    """The destination can take nothing more in this run (a daily allowance is spent, say),
    and nothing of the batch at hand was sent.

    Raised by ``Destination.push`` only when that holds for the whole batch: the core then
    answers every change of it ``Outcome.NOT_SENT`` (kept for a later run, no retry
    attempt charged) and sends nothing more to this destination in this run. A batch that
    was partly sent answers ``NOT_SENT`` per change instead. ``retry_after``: seconds
    until the destination can take more, when known.
    """


class AuthError(ConnectorError):
    """Credentials, account or base URL are wrong: a configuration problem found at run time."""


class RecordError(CrmsyncError):
    """One record is invalid. ``field`` names the offending field; the record is quarantined."""

    def __init__(self, reason: str, *, field: str = "", value: object = None):
        self.reason = reason
        self.field = field
        self.value = value
        super().__init__(f"{field}: {reason}" if field else reason)
