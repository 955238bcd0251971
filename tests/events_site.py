"""Helpers for the events tests: a sample store with events on, its exports edited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.outbox import read_events
from state import schema
from state.store import Store
from tests.e2e import Site, make_site


def events_site(
    root: Path, state_url: str, customers: int = 300, event_batch: int = 500, **kw: Any
) -> Site:
    """``make_site`` with the pipeline sending events (the pipeline's table is the last
    of the config, so its keys go at the end)."""
    site = make_site(root, state_url, customers, **kw)
    text = site.config.read_text(encoding="utf-8")
    text = text.replace('kind = "outbox"\n', f'kind = "outbox"\nevent_batch_size = {event_batch}\n')
    site.config.write_text(text + "events = true\n", encoding="utf-8")
    return site


def events(site: Site) -> list[dict[str, Any]]:
    return read_events(site.outbox) if (site.outbox / "events").exists() else []


def by_key(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        out[record["key"]] = record
    return out


def edit_cart(path: Path, cart_id: str, **changes: Any) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        cart = json.loads(line)
        if cart.get("id") == cart_id:
            cart.update(changes)
            lines[i] = json.dumps(cart, ensure_ascii=False)
            break
    else:
        raise AssertionError(f"cart {cart_id} not found")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def event_ledger_keys(url: str, destination: str = "out") -> set[str]:
    store = Store(url)
    t = schema.event_ledger
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.event_key).where(t.c.destination == destination))
        keys = {str(k) for (k,) in rows}
    store.close()
    return keys
