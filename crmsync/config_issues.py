"""Pydantic's validation errors as configuration issues an operator can act on.

Three things pydantic does not do for a configuration file:

- name the key as written: a tagged union's tag (``auth.basic.kind``) is dropped from
  the path when the file has no such key (``auth.kind``);
- say which key was meant: an unknown key gets "did you mean" from the keys its table
  takes;
- refuse quoted numbers and booleans: pydantic's lax mode reads ``batch_size = "500"``
  as 500 and ``default_segments = "yes"`` as true. ``strict_issues`` validates again in
  strict mode and reports only those coercions, and only for values from the file (an
  environment variable is text by nature, so ``CRMSYNC_..__BATCH_SIZE=500`` is fine).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Container, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from crmsync.errors import ConfigIssue, CrmsyncError

_SCALAR_TYPES = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
}
CHECK_SPELLING = "check the spelling against config.example.toml"


def issues_from(
    exc: ValidationError, prefix: str = "", *, raw: object = None, model: Any = None
) -> list[ConfigIssue]:
    """One issue per error of ``exc``; ``raw`` (the validated input) and ``model`` (its
    type) let keys be named as written and unknown keys get close matches."""
    out: list[ConfigIssue] = []
    for error in exc.errors():
        loc = as_written(error["loc"], raw)
        key = _key(prefix, loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1]) if loc else ""
            out.append(ConfigIssue(key, "unknown key", _unknown_hint(name, model, loc[:-1])))
        elif kind == "missing":
            out.append(ConfigIssue(key, "required key is missing", "add it"))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            given = error.get("input")
            shown = _short(given)
            quiet = isinstance(given, (dict, list)) or shown in message or _secret(key)
            hint = "" if quiet else f"got {shown}"
            out.append(ConfigIssue(key, message, hint))
    return out


def strict_issues(
    type_: Any, value: object, prefix: str, from_env: Container[str] = ()
) -> list[ConfigIssue]:
    """Numbers and booleans written as text (or as another type) in the file: values lax
    validation accepted by converting them. ``from_env`` holds the dotted keys whose value
    came from an environment variable; those are left alone."""
    try:
        TypeAdapter(type_).validate_python(value, strict=True)
    except CrmsyncError:  # a validator's own error: lax validation reported it already
        return []
    except ValidationError as exc:
        out: list[ConfigIssue] = []
        for error in exc.errors():
            wanted = _SCALAR_TYPES.get(error["type"])
            loc = as_written(error["loc"], value)
            key = _key(prefix, loc)
            if wanted is None or key in from_env:
                continue
            got = error.get("input")
            if isinstance(got, str):
                message = f"expected {wanted}, got the text {got!r}"
                hint = f"write {got.strip()} without quotes" if wanted != "true or false" else ""
                hint = hint or "write true or false, without quotes"
            else:
                message = f"expected {wanted}, got {_short(got)}"
                hint = ""
            out.append(ConfigIssue(key, message, hint))
        return out
    return []


def as_written(loc: Sequence[int | str], raw: object) -> tuple[int | str, ...]:
    """``loc`` without the parts pydantic adds that are no key of the input (a tagged
    union's tag): a part missing from the table, followed by one that is in it, is dropped."""
    out: list[int | str] = []
    node = raw
    parts = list(loc)
    i = 0
    while i < len(parts):
        part = parts[i]
        if isinstance(node, Mapping) and part not in node:
            if i + 1 < len(parts) and parts[i + 1] in node:
                i += 1
                continue
            out.extend(parts[i:])
            break
        out.append(part)
        node = _child(node, part)
        i += 1
    return tuple(out)


def _child(node: object, part: int | str) -> object:
    if isinstance(node, Mapping):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _key(prefix: str, loc: Sequence[int | str]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return f"{prefix}.{key}" if prefix and key else (prefix or key or "<config>")


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=2, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return CHECK_SPELLING


def _unknown_hint(name: str, model: Any, loc: Sequence[int | str]) -> str:
    if model is None:
        return CHECK_SPELLING
    return did_you_mean(name, keys_at(model, loc))


def keys_at(type_: Any, loc: Sequence[int | str]) -> list[str]:
    """The keys the table at ``loc`` (inside a value of ``type_``) may hold."""
    candidates = [type_]
    for part in loc:
        following: list[Any] = []
        for candidate in candidates:
            for member in _members(candidate):
                following.extend(_step(member, part))
        candidates = following or candidates  # a union's tag: stay where we are
    names: list[str] = []
    for candidate in candidates:
        for member in _members(candidate):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names.extend(n for n in member.model_fields if n not in names)
    return names


def _members(type_: Any) -> list[Any]:
    origin = get_origin(type_)
    if origin is Annotated:
        return _members(get_args(type_)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(type_) for m in _members(arg)]
    return [type_]


def _step(member: Any, part: int | str) -> list[Any]:
    if isinstance(member, type) and issubclass(member, BaseModel):
        field = member.model_fields.get(str(part))
        return [field.annotation] if field is not None else []
    origin, args = get_origin(member), get_args(member)
    if origin in (dict, Mapping) and len(args) == 2:
        return [args[1]]
    if origin in (list, tuple, Sequence) and args and isinstance(part, int):
        return [args[0]]
    return []


def _secret(key: str) -> bool:
    """A value not to echo: credentials, and URLs (which may hold a password)."""
    last = key.rsplit(".", 1)[-1].lower()
    return any(word in last for word in ("url", "key", "token", "secret", "password", "user"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
