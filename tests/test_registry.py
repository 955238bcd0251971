"""The connector registry: the kinds crmsync ships come from its own metadata, without
reading every installed package's; a kind from another package is still found."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint, PackageNotFoundError

import pytest

from connectors.files import FilesSource
from connectors.mailchimp import MailchimpDestination
from crmsync import registry
from crmsync.errors import ConfigError


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    registry._shipped.cache_clear()
    registry._entry_points.cache_clear()
    yield
    registry._shipped.cache_clear()
    registry._entry_points.cache_clear()


def test_a_shipped_kind_loads_without_reading_every_installed_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def every_package(**_: object) -> list[EntryPoint]:
        raise AssertionError("read every installed package's entry points")

    monkeypatch.setattr(registry, "entry_points", every_package)
    assert registry.load(registry.SOURCES, "files", key="sources.shop.kind") is FilesSource
    found = registry.load(registry.DESTINATIONS, "mailchimp", key="destinations.mc.kind")
    assert found is MailchimpDestination


def test_another_packages_kind_is_found_and_cannot_replace_a_shipped_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = registry.DESTINATIONS
    theirs = [
        EntryPoint("omnisend", "tests.test_registry:Omnisend", group),
        EntryPoint("mailchimp", "tests.test_registry:Omnisend", group),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda **_: theirs)
    assert registry.load(group, "omnisend", key="destinations.o.kind") is Omnisend
    assert registry.load(group, "mailchimp", key="destinations.mc.kind") is MailchimpDestination
    assert {"omnisend", "mailchimp", "klaviyo", "hubspot"} <= set(registry.kinds(group))


def test_an_unknown_kind_names_the_key_and_the_kinds_there_are() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.load(registry.DESTINATIONS, "mailchimpp", key="destinations.mc.kind")
    (issue,) = caught.value.issues
    assert issue.key == "destinations.mc.kind"
    assert "unknown kind 'mailchimpp'" in issue.message
    assert "mailchimp" in issue.hint and "klaviyo" in issue.hint


def test_without_crmsync_installed_every_package_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> object:
        raise PackageNotFoundError(name)

    group = registry.SOURCES
    monkeypatch.setattr(registry, "distribution", not_installed)
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda **_: [EntryPoint("files", "connectors.files:FilesSource", group)],
    )
    assert registry.load(group, "files", key="sources.shop.kind") is FilesSource


class Omnisend:
    """Stands for a third party's destination class."""
