"""Database errors, classified first and then turned into crmsync's own (``crmsync.errors``).

The SQL source meets SQLAlchemy's ``DBAPIError`` family at one boundary, ``translated``:
each error is classified into one decision by the table below (the first match wins),
then raised as the matching crmsync error with the driver's first line of explanation,
any password removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

import sqlalchemy as sa

from crmsync.errors import AuthError, ConfigError, ConnectorError, TransientError


class Decision(StrEnum):
    AUTH = "auth"  # the credentials or the account: fix the url
    CONFIG = "config"  # the database refuses the SQL: a table, column or query is wrong
    TRANSIENT = "transient"  # the connection failed or was lost: a later run may succeed
    FAILURE = "failure"  # anything else the database said


_REFUSED_SQL = ("no such table", "no such column", "syntax error", "does not exist")
_RULES: tuple[tuple[Callable[[sa.exc.DBAPIError, str], bool], Decision], ...] = (
    (lambda exc, text: "authentication" in text or "access denied" in text, Decision.AUTH),
    (lambda exc, text: isinstance(exc, sa.exc.ProgrammingError), Decision.CONFIG),
    (lambda exc, text: any(words in text for words in _REFUSED_SQL), Decision.CONFIG),
    (
        lambda exc, text: isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError),
        Decision.TRANSIENT,
    ),
)


def classify(exc: sa.exc.DBAPIError, message: str) -> Decision:
    lowered = message.lower()
    return next((d for rule, d in _RULES if rule(exc, lowered)), Decision.FAILURE)


def explanation(exc: sa.exc.DBAPIError, password: str | None) -> str:
    """The driver's first line, without the password (drivers may echo a connection string)."""
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text.replace(password, "***") if password else text


@contextmanager
def translated(source_key: str, stream: str, password: str | None) -> Iterator[None]:
    """Database errors inside the block raised as crmsync's, keyed to the stream."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        message = explanation(exc, password)
        match classify(exc, message):
            case Decision.AUTH:
                raise AuthError(
                    f"{source_key}: the database refused the credentials: {message}"
                ) from exc
            case Decision.CONFIG:
                raise ConfigError(
                    f"{stream}: the database refused the query: {message}",
                    key=f"{source_key}.streams.{stream}",
                    hint="check the table/query and column names; `crmsync check` names each",
                ) from exc
            case Decision.TRANSIENT:
                raise TransientError(f"{source_key} {stream}: {message}") from exc
            case _:
                raise ConnectorError(f"{source_key} {stream}: {message}") from exc
