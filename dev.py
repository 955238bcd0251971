#!/usr/bin/env python3
"""Bootstrap and task runner: needs nothing but Python 3.11+.

Creates `.venv` from the hash-pinned `requirements.lock` on first use (and again
whenever the lock or `pyproject.toml` changes), then runs the task. Kept to the
standard library on purpose, since it runs before anything is installed.

    python3 dev.py demo            run the demo pipeline (SQLite + bundled sample data)
    python3 dev.py test [ARGS]     the whole test suite (extra ARGS go to pytest)
    python3 dev.py lint            ruff and mypy, as CI runs them
    python3 dev.py crmsync ARGS    any crmsync command inside the environment
    python3 dev.py bench [ARGS]    the benchmark suite (writes bench/results.json)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".crmsync-installed"


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before anything is checked
        sys.exit(f"crmsync needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = _inputs_digest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PY.exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("dev.py: installing the pinned dependencies (requirements.lock)", file=sys.stderr)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "install", "--require-hashes", "-r", "requirements.lock"], cwd=ROOT, check=True
    )
    subprocess.run([*pip, "install", "--no-deps", "-e", "."], cwd=ROOT, check=True)
    STAMP.write_text(wanted)


def run(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT, check=False).returncode


def main(argv: list[str]) -> int:
    task, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if task in {"help", "-h", "--help"}:
        print(__doc__)
        return 0
    ensure_env()
    if task == "demo":
        return run([str(BIN / "crmsync"), "run", "--config", "config.example.toml", *rest])
    if task == "test":
        parallel = [] if any(a.startswith("-n") for a in rest) else ["-n", "auto"]
        return run([str(PY), "-m", "pytest", *parallel, *rest])
    if task == "lint":
        for cmd in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
            code = run([str(BIN / cmd[0]), *cmd[1:]])
            if code:
                return code
        return 0
    if task == "crmsync":
        return run([str(BIN / "crmsync"), *rest])
    if task == "bench":
        return run([str(PY), "-m", "bench", *rest])
    print(f"dev.py: unknown task {task!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
