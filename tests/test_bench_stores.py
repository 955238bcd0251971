"""The many-stores bench's layout is a directory ``serve`` loads: every store with its own
export files, audience and key, the base's schedule and, on workers, ``[celery]`` and the
accounts' shared budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.stores import layout
from bench.stores.cli import _celery
from service.stores import load_stores
from tests.fakes.mailchimp import FakeMailchimp


def test_every_store_loads_with_an_account_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layout, "CACHE", tmp_path / "cache")
    shape = layout.Shape(stores=3, customers=5)
    data = layout.exports(shape)
    fake = FakeMailchimp(validate=False)
    keys = layout.accounts(fake, sorted(data))
    for name, key in keys.items():
        monkeypatch.setenv(layout.KEY_ENV.format(name), key)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    celery = _celery("redis://127.0.0.1:6379/0", workers=2)
    layout.write_directory(
        tmp_path / "stores", url, data, "http://127.0.0.1:1/3.0", max_parallel=4, celery=celery
    )

    loaded = load_stores(tmp_path / "stores")
    assert loaded.broken == {}
    assert sorted(loaded.configs) == ["s0000", "s0001", "s0002"]
    lists = set()
    for name, config in loaded.configs.items():
        (pipeline,) = config.pipelines.values()
        (destination,) = pipeline.destinations
        settings = destination.config
        assert settings.api_key.get_secret_value() == keys[name]
        assert settings.http.rate.shared is not None  # on workers: the account's budget
        lists.add(settings.list_id)
        assert config.settings.celery.broker_url is not None
        assert config.settings.serve.max_parallel == 4
    assert len(lists) == 3 and set(fake.lists) >= lists
    assert (data["s0001"] / "customers.csv").read_text() != (
        data["s0000"] / "customers.csv"
    ).read_text()  # a seed per store
