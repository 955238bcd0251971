"""The bytecode cache the bench's runs load from, filled before the first run.

Each run is started with ``PYTHONPYCACHEPREFIX`` set to ``<work>/pycache``, so its
modules' bytecode is read from, and written to, that tree, Python's own library and the
environment's packages included. An installed crmsync has its bytecode written when it is
installed (pip compiles what it installs; Python's library comes compiled), so a user's
first sync compiles nothing. In a fresh cache the bench's first run compiled every module
it imported: about 3.3 s on a 2-core machine, counted in the first sync, which made the
other runs' shares of it look smaller than they are.

``fill`` therefore imports every module of the packages the tree's ``pyproject.toml``
installs, once, in a process with the runs' cache and source tree, before the first run:
what they import (SQLAlchemy, pydantic, httpx, the drivers, the standard library's
modules) is compiled into the cache as a run would compile it. A later call finds it
there and compiles nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from bench.e2e.options import ROOT, Options

# every module of the packages but ``__main__``s, each imported on its own: one that cannot
# be imported here (an optional dependency missing) is left to a run, as before
PROBE = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    try:
        package = importlib.import_module(name)
    except Exception:
        continue
    if not hasattr(package, "__path__"):
        continue  # a module, not a package: imported above
    for found in pkgutil.walk_packages(package.__path__, name + ".", onerror=lambda _: None):
        if found.name.endswith(".__main__"):
            continue  # runs its command when imported
        try:
            importlib.import_module(found.name)
        except (Exception, SystemExit):
            pass
"""


def prefix(options: Options) -> Path:
    return options.work / "pycache"


def fill(options: Options) -> float:
    """Compiles what the runs import into their cache; returns the seconds it took."""
    started = time.perf_counter()
    source = options.source or ROOT
    import_into(prefix(options), source, installed(source))
    return time.perf_counter() - started


def installed(source: Path) -> tuple[str, ...]:
    """The packages and top-level modules the tree's ``pyproject.toml`` installs."""
    project = tomllib.loads((source / "pyproject.toml").read_text("utf-8"))
    setup = project["tool"]["setuptools"]
    found = [pattern.rstrip("*") for pattern in setup["packages"]["find"]["include"]]
    return tuple(dict.fromkeys([*found, *setup.get("py-modules", [])]))


def import_into(cache: Path, source: Path, packages: tuple[str, ...]) -> None:
    """Imports ``packages`` (and every module in them) from ``source`` with ``cache`` as
    the bytecode cache, as a run started there would."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(cache), "PYTHONPATH": str(source)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-c", PROBE, *packages],
        cwd=source,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
