"""The SQL source as an operator meets it: a TOML file, ``crmsync check`` and ``run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from cli import main
from connectors.outbox import read_outbox
from crmsync.sample import SampleSpec, iter_store
from tests.sql_shop import create_shop, shop_config, write_store

SPEC = SampleSpec(customers=60, orders_per_customer=2.0, seed=9)


def toml_value(value: Any) -> str:
    """A value as TOML (inline tables and arrays; JSON's string escapes are TOML's)."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def write_config(tmp_path: Path, source: dict[str, Any]) -> Path:
    lines = [f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n', "[sources.shop_db]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in source.items()]
    lines += [
        "\n[destinations.out]",
        'kind = "outbox"',
        f'directory = "{tmp_path / "outbox"}"',
        "\n[pipelines.main]",
        'sources = ["shop_db"]',
        'destinations = ["out"]',
    ]
    config = tmp_path / "crmsync.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@pytest.fixture
def shop_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    write_store(engine, create_shop(engine, None), iter_store(SPEC))
    engine.dispose()
    return url


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout + result.stderr


def test_check_and_run_a_sql_source_from_toml(tmp_path: Path, shop_url: str) -> None:
    config = write_config(tmp_path, shop_config(shop_url, None))
    code, out = invoke("check", "--config", str(config))
    assert code == 0, out
    assert out.count("[ok ] shop_db (sql) ") == 3, out
    code, out = invoke("run", "--config", str(config), "--as-of", "2026-11-02T00:00:00+00:00")
    assert code == 0, out
    sent = [record for record in read_outbox(tmp_path / "outbox" / "out")]
    customers = sum(1 for record in iter_store(SPEC) if type(record).__name__ == "Customer")
    assert len(sent) >= customers * 0.9


def test_check_names_a_missing_column_and_never_shows_the_password(
    tmp_path: Path, shop_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_DB_PASSWORD", "cok-gizli-parola")
    source = shop_config("postgresql+psycopg://okur:${SHOP_DB_PASSWORD}@127.0.0.1:9/x", None)
    source["connect_timeout"] = 1
    config = write_config(tmp_path, source)
    code, out = invoke("check", "--config", str(config))
    assert code != 0 and "cok-gizli-parola" not in out

    source = shop_config(shop_url, None)
    source["streams"]["orders"]["lines"]["fields"]["quantity"] = "miktar"
    config = write_config(tmp_path, source)
    code, out = invoke("check", "--config", str(config))
    assert code != 0
    assert "sources.shop_db.streams.orders.lines.fields.quantity" in out
    assert "no column 'miktar'" in out


def test_a_mapping_run_could_not_use_fails_when_the_config_loads(
    tmp_path: Path, shop_url: str
) -> None:
    source = shop_config(shop_url, None)
    del source["streams"]["orders"]["fields"]["status"]
    config = write_config(tmp_path, source)
    code, out = invoke("check", "--config", str(config))
    assert code != 0
    assert "sources.shop_db" in out and "streams.orders.fields.status" in out
