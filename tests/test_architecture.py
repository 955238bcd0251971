"""The dependency rule, checked on the code itself: the core, the engine, the state store
and the mapping package never import a connector module and never name a vendor in code,
and the core (``crmsync``, the vocabulary and the contracts) imports nothing that stands
above it: not the state store, the mapping files, the engine, the CLI or the service.

Connectors are found through entry points (``crmsync.registry``) and each vendor's rules
live with its connector; a vendor's name may appear in a docstring or a comment that
explains something, but not in an identifier, an import or a string the code uses.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INNER = ("crmsync", "engine", "state", "mappings")
ABOVE_CORE = (
    "state", "mappings", "connectors", "engine", "cli", "service", "distributed", "scheduler",
)  # fmt: skip
VENDOR = re.compile(
    r"mailchimp|klaviyo|hubspot|salesforce|omnisend|shopify|woocommerce", re.IGNORECASE
)


def _modules() -> list[Path]:
    return sorted(p for package in INNER for p in (ROOT / package).rglob("*.py"))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _names_in_code(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name):
            yield line, node.id
        elif isinstance(node, ast.Attribute):
            yield line, node.attr
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef | ast.alias):
            yield line, node.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield line, node.module
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield line, node.value


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_inner_modules_import_no_connector(path: Path) -> None:
    bad = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        if name == "connectors" or name.startswith("connectors.")
    ]
    assert bad == [], f"{path.relative_to(ROOT)} imports a connector module"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "crmsync").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_core_imports_nothing_above_it(path: Path) -> None:
    bad = [
        f"line {line}: {name}" for line, name in _imports(path) if name.split(".")[0] in ABOVE_CORE
    ]
    assert bad == [], f"{path.relative_to(ROOT)} imports a layer above the core"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_inner_modules_name_no_vendor_in_code(path: Path) -> None:
    bad = [f"line {line}: {text!r}" for line, text in _names_in_code(path) if VENDOR.search(text)]
    assert bad == [], f"{path.relative_to(ROOT)} names a vendor in code"


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    """The scanners themselves: an import, an identifier and a string are caught; a
    docstring and a comment are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Explains Mailchimp tags."""\n'
        "from connectors.mailchimp import MailchimpDestination  # a Klaviyo comment\n"
        "import connectors.outbox\n"
        "kind = 'hubspot'\n"
        "def klaviyo_rules() -> None:\n"
        '    """Shopify docstring."""\n',
        encoding="utf-8",
    )
    assert [name for _, name in _imports(sample)] == ["connectors.mailchimp", "connectors.outbox"]
    found = {text for _, text in _names_in_code(sample) if VENDOR.search(text)}
    assert found == {"connectors.mailchimp", "MailchimpDestination", "hubspot", "klaviyo_rules"}
