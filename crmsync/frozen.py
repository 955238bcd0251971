"""Frozen slotted dataclasses whose construction costs about what a plain one's does.

A frozen dataclass cannot assign its own fields, so the ``__init__`` that ``dataclasses``
writes sets each one through ``object.__setattr__``, looked up again for every field of
every instance: on Python 3.11, 1.4 µs to build an order line against 0.3 µs for the
same class unfrozen. A source builds millions of records in a first sync, and that was
8 % of a reader process's time. ``quick_init``, put above ``dataclass(frozen=True,
slots=True)``, writes that one method again: each field is set through its slot's own
descriptor, bound once for the class (0.5 µs). Everything else (equality, hashing,
``repr``, pickling, the refusal to assign a field) is what ``dataclasses`` made, and a
type checker sees the dataclass it decorates.

It takes the plain cases records have: fields set by ``__init__``, positional or by
keyword, with a default or a default factory; no ``__post_init__``, ``InitVar`` or
keyword-only fields (it refuses a class that has one, rather than build it wrong).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

T = TypeVar("T")

_NO_VALUE = object()  # the default of a field that has a default factory


def quick_init(cls: type[T]) -> type[T]:
    """The frozen slotted dataclass ``cls``, given the faster ``__init__``."""
    made: Any = cls
    params = getattr(made, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in made.__dict__:
        raise TypeError(f"{made.__name__} is not a frozen dataclass with slots")
    if hasattr(made, "__post_init__"):
        raise TypeError(f"{made.__name__} has __post_init__, which quick_init does not run")
    names: list[str] = []
    parameters: list[str] = []
    lines: list[str] = []
    bound: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    for number, item in enumerate(dataclasses.fields(made)):
        if not item.init or item.kw_only:
            raise TypeError(f"{made.__name__}.{item.name}: quick_init takes plain fields")
        name = item.name
        names.append(name)
        setter = f"_set{number}"
        bound[setter] = made.__dict__[name].__set__  # the slot's member descriptor
        if item.default is not dataclasses.MISSING:
            bound[f"_default{number}"] = item.default
            parameters.append(f"{name}=_default{number}")
        elif item.default_factory is not dataclasses.MISSING:
            bound[f"_factory{number}"] = item.default_factory
            parameters.append(f"{name}=_NO_VALUE")
            lines.append(f"if {name} is _NO_VALUE: {name} = _factory{number}()")
        else:
            parameters.append(name)
        lines.append(f"{setter}(self, {name})")
    written = list(inspect.signature(made.__init__).parameters)[1:]
    if written != names:  # an InitVar, say: a parameter that is no field
        raise TypeError(f"{made.__name__}.__init__ takes {written}, not its fields {names}")
    body = "\n".join(f"        {line}" for line in lines or ["pass"])
    source = (
        f"def _make({', '.join(bound)}):\n"
        f"    def __init__(self, {', '.join(parameters)}):\n{body}\n"
        f"    return __init__\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<quick_init {made.__name__}>", "exec"), namespace)  # the text above
    init = namespace["_make"](**bound)
    init.__qualname__ = f"{made.__qualname__}.__init__"
    init.__module__ = made.__module__
    made.__init__ = init
    return made  # type: ignore[no-any-return]
