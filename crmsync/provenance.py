"""Where a configuration value came from: a line of the TOML file, or an environment
variable (``CRMSYNC_<SECTION>__<KEY>``).

``tomllib`` keeps no positions, so the file is scanned lightly for table headers and
``key =`` lines; that is enough to point an operator at the line of a key path, which is
all an issue needs. Environment overrides are found by name, so an override that names
no key (``CRMSYNC_STAT__URL``) is reported with the name it was probably meant to be,
instead of being ignored.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from crmsync.errors import ConfigIssue

PREFIX = "CRMSYNC_"
DELIMITER = "__"

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_PART_TEXT = r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'"""  # a bare or quoted key
_KEY = re.compile(rf"^\s*((?:{_PART_TEXT})(?:\s*\.\s*(?:{_PART_TEXT}))*)\s*=")
_PART = re.compile(_PART_TEXT)
_INDEX = re.compile(r"\[\d+\]")
UNSET = re.compile(r"environment variable (\w+) is not set")


def _parts(dotted: str) -> list[str]:
    return [p.strip("\"'") for p in _PART.findall(dotted)]


def toml_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line of every table header and ``key =`` line."""
    lines: dict[str, int] = {}
    table: list[str] = []
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _HEADER.match(line)
        if header and "=" not in header.group(1):
            table = _parts(header.group(1))
            lines.setdefault(".".join(table), number)
            continue
        found = _KEY.match(line)
        if not found:
            continue
        path = ".".join([*table, *_parts(found.group(1))])
        lines.setdefault(path, number)
        rest = line[found.end() :]
        for quote in ('"""', "'''"):
            if rest.count(quote) % 2 == 1:
                in_multiline = quote
    return lines


def line_of(key: str, lines: Mapping[str, int]) -> tuple[int, bool] | None:
    """The line of ``key`` (or of its nearest written parent) and whether it is exact."""
    path = _INDEX.sub("", key.split(" ", 1)[0])
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        found = lines.get(".".join(parts[:end]))
        if found is not None:
            return found, end == len(parts)
    return None


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``CRMSYNC_*`` variables: dotted key path (lower-case, as pydantic-settings reads
    it) -> the variable's name."""
    found: dict[str, str] = {}
    for name in os.environ if environ is None else environ:
        if name.upper().startswith(PREFIX):
            parts = name[len(PREFIX) :].lower().split(DELIMITER)
            found[".".join(parts)] = name
    return found


def env_var_for(key: str, env: Mapping[str, str]) -> str | None:
    """The variable that set ``key`` or one of its parents, if any did."""
    parts = _INDEX.sub("", key.split(" ", 1)[0]).lower().split(".")
    for end in range(len(parts), 0, -1):
        name = env.get(".".join(parts[:end]))
        if name is not None:
            return name
    return None


def unknown_variables(
    known: Iterable[str], environ: Mapping[str, str] | None = None
) -> list[ConfigIssue]:
    """Overrides naming no key of the configuration; ``known`` lists the dotted paths that
    an override may set (entries of tables such as ``sources`` are open).

    A ``CRMSYNC_*`` variable without ``__`` is reported only when it is close to a real
    override's name (``CRMSYNC_STATE_URL``): other tools' variables share the prefix.
    """
    environ = os.environ if environ is None else environ
    known = list(known)
    names = [PREFIX + DELIMITER.join(k.upper().split(".")) for k in known if "*" not in k]
    issues: list[ConfigIssue] = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(PREFIX):
            continue
        path = upper[len(PREFIX) :].lower().split(DELIMITER)
        if upper in names or (DELIMITER in upper and _matches(path, known)):
            continue
        close = difflib.get_close_matches(upper, names, n=1, cutoff=0.8)
        if DELIMITER not in upper and not close:
            continue
        hint = f"did you mean {close[0]}?" if close else _overridable(known)
        issues.append(
            ConfigIssue(
                name,
                "this environment variable overrides no configuration key",
                hint,
                where="environment",
            )
        )
    return issues


def _matches(path: list[str], known: Iterable[str]) -> bool:
    for pattern in known:
        wanted = pattern.split(".")
        if len(path) < len(wanted):
            continue
        if all(w in ("*", p) for w, p in zip(wanted, path, strict=False)):
            return True
    return False


def _overridable(known: Iterable[str]) -> str:
    sections = sorted({k.split(".")[0].upper() for k in known})
    return f"variables are {PREFIX}<SECTION>__<KEY>, sections: {', '.join(sections)}"


def annotate(issues: Iterable[ConfigIssue], path: Path) -> list[ConfigIssue]:
    """``issues`` with where each value came from, without knock-ons: a key whose
    ``${VAR}`` is unset gets that one issue, not also the ones its empty value causes."""
    try:
        lines = toml_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        lines = {}
    env = environment()
    issues = list(issues)
    unset = [issue.key for issue in issues if UNSET.search(issue.message)]
    # an override that names no key is reported as such, not also as the unknown key
    unknown = {f"from {issue.key}" for issue in issues if issue.where == "environment"}
    out: list[ConfigIssue] = []
    seen: set[tuple[str, str]] = set()
    for issue in issues:
        if not UNSET.search(issue.message) and any(_under(issue.key, k) for k in unset):
            continue
        if (issue.key, issue.message) in seen:
            continue
        seen.add((issue.key, issue.message))
        where = issue.where or _where(issue.key, path, lines, env)
        if where not in unknown:
            out.append(replace(issue, where=where))
    return out


def _under(key: str, parent: str) -> bool:
    return key == parent or key.startswith(parent + ".") or key.startswith(parent + "[")


def _where(key: str, path: Path, lines: Mapping[str, int], env: Mapping[str, str]) -> str:
    variable = env_var_for(key, env)
    if variable is not None:
        return f"from {variable}"
    found = line_of(key, lines)
    if found is None:
        return ""
    line, exact = found
    return f"{path.name}:{line}" if exact else f"{path.name}:{line}, in this table"
