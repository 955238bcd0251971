"""Importing a library without the modules it imports at its top but a process never uses.

A library may import a module at its top that crmsync never calls through (a vendor's
SDK imports an HTTP library for the sending that crmsync's HTTP seam replaces). Each
such import costs every process at start-up, and most of a run that finds little to do
is start-up.

``deferred(names)`` holds each of ``names`` not loaded yet in ``sys.modules`` by a
``Deferred`` module while the library is imported, and the library keeps that as its
global. The stand-ins leave ``sys.modules`` when the block ends: anything that imports
the module later gets the real one, and so does the library, should any of its code read
an attribute of its stand-in (the real module is imported then). So what runs is
unchanged; only the import is left until something needs it.

It pays only where nothing else in the process imports the module anyway: asyncio, say,
which pydantic-settings imports for command-line apps' async commands, is imported
by SQLAlchemy too, and used there at import time.

A library that imports an optional module only if it can, with a fallback of its own,
needs no stand-in: ``absent(name)`` marks the module not installed, and the library
takes its fallback (a stand-in would be imported at once by its ``from ... import``).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Deferred(types.ModuleType):
    """A module's stand-in that imports the real one at the first attribute read."""

    def __getattr__(self, attribute: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:  # read while the library was being imported
            del sys.modules[name]
        return getattr(importlib.import_module(name), attribute)


@contextmanager
def deferred(names: tuple[str, ...]) -> Iterator[None]:
    """While inside, an ``import`` of any of ``names`` not loaded yet binds a
    ``Deferred`` stand-in; after, ``sys.modules`` holds no stand-in."""
    placed = {name: Deferred(name) for name in names if name not in sys.modules}
    sys.modules.update(placed)
    try:
        yield
    finally:
        for name, stand_in in placed.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def absent(name: str) -> None:
    """Marks ``name`` as not installed for the rest of the process, unless it is loaded
    already: an ``import`` of it raises ImportError."""
    sys.modules.setdefault(name, None)  # type: ignore[arg-type]
