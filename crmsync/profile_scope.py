"""What one profile run covers: its fixed context and the slice of the key space it reads."""

from __future__ import annotations

from dataclasses import dataclass

from crmsync.config import ProfileSettings


@dataclass(frozen=True, slots=True)
class ProfileContext:
    """Everything a profile depends on besides the data: fixed for one run."""

    sources: tuple[str, ...]
    consent_scopes: tuple[str, ...]  # connector names whose consent events apply
    currency: str
    as_of_ms: int
    settings: ProfileSettings


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Person keys from ``low`` (inclusive) to ``high`` (exclusive); None is unbounded."""

    low: str | None = None
    high: str | None = None


EVERYONE = KeyRange()
