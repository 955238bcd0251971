"""The real Redis server the shared rate budget tests use, and accounts of their own.

``CRMSYNC_TEST_REDIS_URL`` names it (default: database 15 of 127.0.0.1:6379, away from
the databases a deployment would use). Where it is missing the tests skip with one line,
except under ``CI=true``, where they fail loudly. Each test draws fresh account names, so
tests never share keys, and their keys are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from connectors.http.shared_store import AccountKeys

REDIS_URL = os.environ.get("CRMSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@dataclass
class RedisForTests:
    url: str
    client: redis.Redis
    accounts: list[str] = field(default_factory=list)

    def account(self, prefix: str = "test") -> str:
        """A fresh account name (of the shape the connectors use: kind and digest)."""
        name = f"{prefix}:{uuid.uuid4().hex[:16]}"
        self.accounts.append(name)
        return name

    def keys_of(self, account: str) -> AccountKeys:
        return AccountKeys.of(account)


@pytest.fixture
def shared_redis() -> Iterator[RedisForTests]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"Redis is not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true requires it)")
        pytest.skip(message)
    found = RedisForTests(REDIS_URL, client)
    try:
        yield found
    finally:
        for account in found.accounts:
            root = AccountKeys.of(account).bucket.removesuffix("bucket")
            for key in client.scan_iter(match=root + "*"):  # braces are literal in a match
                client.delete(key)
        client.close()
