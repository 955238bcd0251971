"""The container image and the compose file, checked without building anything (no
registry is reachable here): the Dockerfile installs the hash-checked lock, then crmsync
without resolving again, runs as a user that is not root, copies only files that exist
and that .dockerignore lets through, and checks /healthz on the port the service serves
it on; compose.yaml runs ``serve`` against its PostgreSQL with a configuration that
loads with the environment it sets."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from crmsync.config import ObserveSettings, ServeSettings
from engine.resolve import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = "/etc/crmsync/crmsync.toml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def of(kind: str) -> list[str]:
    return [args for word, args in instructions() if word == kind]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative, '/'-separated) out of the context."""
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    result = False
    parts = path.split("/")
    for written in patterns:
        negate = written.startswith("!")
        pattern = written.lstrip("!").strip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, f"**/{pattern}") for p in prefixes
        ):
            result = not negate
    return result


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def healthcheck_port() -> tuple[str, str]:
    """The port variable and its default in the HEALTHCHECK command."""
    (check,) = of("HEALTHCHECK")
    found = re.search(r"os\.environ\.get\('(\w+)', '(\d+)'\)", check)
    assert found, check
    return found.group(1), found.group(2)


# --- Dockerfile ----------------------------------------------------------------------


def test_the_image_is_slim_python_3_11() -> None:
    (base,) = of("FROM")
    assert base == "python:3.11-slim"


def test_the_lock_is_installed_with_hashes_and_then_crmsync_without_resolving() -> None:
    runs = of("RUN")
    lock = [i for i, r in enumerate(runs) if "pip install" in r and "requirements.lock" in r]
    assert len(lock) == 1
    assert "--require-hashes" in shlex.split(runs[lock[0]])
    project = [i for i, r in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", r)]
    assert len(project) == 1 and project[0] > lock[0]
    # no other pip install could fetch anything unchecked
    assert sum("pip install" in r for r in runs) == 2


def test_the_service_runs_as_a_user_that_is_not_root() -> None:
    words = [w for w, _ in instructions()]
    users = of("USER")
    assert users, "no USER: the image would run as root"
    last = users[-1].split(":")[0]
    assert last not in ("root", "0")
    # after every RUN: nothing later runs as root
    assert max(i for i, w in enumerate(words) if w == "RUN") < max(
        i for i, w in enumerate(words) if w == "USER"
    )
    (create,) = [r for r in of("RUN") if "useradd" in r]
    assert f" {last}" in create and "--uid 10001" in create


def test_every_copied_file_exists_and_reaches_the_build_context() -> None:
    sources: list[str] = []
    for args in of("COPY"):
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        sources += parts[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not ignored(source), f"COPY {source}: .dockerignore leaves it out"


def test_every_package_of_the_project_is_copied() -> None:
    """A package added to pyproject.toml but not to the Dockerfile would be missing from
    the image (``pip install --no-deps .`` installs what it finds)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = project["tool"]["setuptools"]
    wanted = [p.rstrip("*") for p in setuptools["packages"]["find"]["include"]]
    wanted += [f"{m}.py" for m in setuptools.get("py-modules", [])]
    copied = {p.rstrip("/").removeprefix("./") for a in of("COPY") for p in shlex.split(a)}
    assert set(wanted) <= copied, set(wanted) - copied


def test_local_state_and_the_tests_stay_out_of_the_build_context() -> None:
    for path in (".git", ".venv", "var", "tests", "crmsync/__pycache__", "x.db", ".env"):
        assert ignored(path), path
    assert not ignored("cli/__init__.py") and not ignored("requirements.lock")


def test_it_serves_the_configuration_by_default_and_checks_healthz_on_the_metrics_port() -> None:
    assert json.loads(of("ENTRYPOINT")[0]) == ["crmsync"]
    assert json.loads(of("CMD")[0]) == ["serve", "--config", CONFIG_PATH]
    (check,) = of("HEALTHCHECK")
    assert "/healthz" in check and "CMD " in check
    variable, default = healthcheck_port()
    assert variable == "CRMSYNC_OBSERVE__PORT"
    assert int(default) == ObserveSettings.model_fields["port"].default
    assert of("EXPOSE") == [default]
    # the endpoints must listen beyond the container's loopback to be published
    assert any("CRMSYNC_OBSERVE__HOST=0.0.0.0" in env for env in of("ENV"))


# --- compose.yaml --------------------------------------------------------------------


def test_compose_runs_serve_with_postgresql_a_volume_and_the_metrics_port() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "crmsync"}
    db, app = services["postgres"], services["crmsync"]
    assert db["image"].startswith("postgres:")
    (data,) = db["volumes"]
    volume, target = data.split(":")[:2]
    assert target == "/var/lib/postgresql/data" and volume in doc["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])

    assert app["build"] == "."
    assert app["command"] == ["serve", "--config", CONFIG_PATH]
    assert app["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    url = app["environment"]["CRMSYNC_STATE__URL"]
    found = re.fullmatch(r"postgresql\+psycopg://(\w+):[^@]+@postgres:5432/(\w+)", url)
    assert found, url
    assert (found.group(1), found.group(2)) == (
        db["environment"]["POSTGRES_USER"],
        db["environment"]["POSTGRES_DB"],
    )
    port = str(ObserveSettings.model_fields["port"].default)
    assert f"{port}:{port}" in app["ports"]
    assert app["environment"]["CRMSYNC_OBSERVE__PORT"] == port == healthcheck_port()[1]


def test_compose_gives_runs_longer_to_stop_than_serve_gives_them() -> None:
    app = compose()["services"]["crmsync"]
    assert app["stop_signal"] == "SIGTERM"
    grace = re.fullmatch(r"(\d+)s", app["stop_grace_period"])
    assert grace, app["stop_grace_period"]
    assert int(grace.group(1)) > ServeSettings.model_fields["stop_grace_seconds"].default


def _expand(value: str) -> str:
    """``${VAR:-default}`` as compose expands it when VAR is not set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_the_composed_configuration_loads_as_the_container_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mounts laid out under a temporary root and the service's environment set: the
    configuration loads (an unknown CRMSYNC_* variable would be an issue), with the state
    database and the endpoints compose meant."""
    app = compose()["services"]["crmsync"]
    for mount in app["volumes"]:
        source, target = mount.split(":")[:2]
        if not source.startswith("./"):
            continue  # a named volume
        where = tmp_path / target.lstrip("/")
        where.parent.mkdir(parents=True, exist_ok=True)
        original = ROOT / source
        assert original.exists(), f"compose mounts {source}, which does not exist"
        if original.is_dir():
            shutil.copytree(original, where)
        else:
            shutil.copy(original, where)
    environment = {k: _expand(str(v)) for k, v in app["environment"].items()}
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = load_config(tmp_path / CONFIG_PATH.lstrip("/"))
    assert config.state_url == environment["CRMSYNC_STATE__URL"]
    assert config.settings.observe.host == "0.0.0.0"
    assert config.settings.observe.port == int(environment["CRMSYNC_OBSERVE__PORT"])
    assert any(p.settings.schedule or p.settings.every for p in config.pipelines.values())


# --- the systemd unit of docs/service.md ---------------------------------------------


def test_the_documented_systemd_unit_stops_cleanly_and_reloads_with_sighup() -> None:
    text = (ROOT / "docs" / "service.md").read_text(encoding="utf-8")
    found = re.search(r"```ini\n(.*?)```", text, re.DOTALL)
    assert found, "docs/service.md has no unit file"
    unit: dict[str, str] = {}
    for line in found.group(1).splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            unit[key.strip()] = value.strip()
    assert unit["Type"] == "simple"
    assert unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert float(unit["TimeoutStopSec"]) > ServeSettings.model_fields["stop_grace_seconds"].default
    assert " serve --config " in unit["ExecStart"]
    assert unit["User"] not in ("root", "0")
