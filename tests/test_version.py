"""``crmsync --version`` tells the installed package's version."""

from __future__ import annotations

from importlib.metadata import version

from click.testing import CliRunner

from cli import main


def test_version_is_the_package_metadata_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"crmsync {version('crmsync')}\n"
