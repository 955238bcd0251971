"""What a command works on: the configuration of a file, or the stores of a directory.

With a directory (``crmsync.config_dir``), ``--store NAME`` or a pipeline named with its
store (``--pipeline acme.main``) picks one store, whose broken file is a ConfigError as a
broken single file is. Without either, a command works on every store: a broken store is
kept aside with its error so that the others still run, and a pipeline named without its
store (``--pipeline main``) is that pipeline of every store that has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crmsync import config_dir
from crmsync.config import Config, PipelineSpec
from crmsync.errors import ConfigError
from engine.resolve import load_config


@dataclass(frozen=True)
class Target:
    config: Config
    pipelines: list[PipelineSpec]

    @property
    def label(self) -> str:
        return f"store {self.config.store}" if self.config.store else str(self.config.path)


@dataclass(frozen=True)
class Selection:
    targets: list[Target]
    broken: dict[str, ConfigError] = field(default_factory=dict)  # store -> its issues

    @property
    def configs(self) -> list[Config]:
        return [t.config for t in self.targets]

    @property
    def pairs(self) -> list[tuple[Config, PipelineSpec]]:
        return [(t.config, spec) for t in self.targets for spec in t.pipelines]


def select(path: str | Path, store: str | None = None, pipeline: str | None = None) -> Selection:
    """The stores and pipelines a command runs on; ConfigError when what was named does
    not load or does not exist."""
    path = Path(path)
    if not path.is_dir():
        config = load_config(path, store)
        return Selection([Target(config, config.pipeline(pipeline))])
    files = config_dir.store_files(path)
    named = store or _store_in(pipeline, files)
    if named:
        config = load_config(path, named)
        return Selection([Target(config, config.pipeline(_local(config, pipeline)))])
    if not files:
        raise ConfigError(
            f"{path} holds no store file",
            key="--config",
            hint=f"add one <store>.toml per store, beside the shared {config_dir.BASE_FILE}",
        )
    targets: list[Target] = []
    broken: dict[str, ConfigError] = {}
    for name in files:
        try:
            config = load_config(path, name)
        except ConfigError as exc:
            broken[name] = exc
            continue
        wanted = _local(config, pipeline)
        if wanted is None:
            targets.append(Target(config, list(config.pipelines.values())))
        elif wanted in config.pipelines:
            targets.append(Target(config, [config.pipelines[wanted]]))
    if pipeline is not None and not targets and not broken:
        raise ConfigError(
            f"no store has a pipeline named {pipeline!r}",
            key="--pipeline",
            hint="name it as in the store's file, or as <store>.<pipeline>",
        )
    return Selection(targets, broken)


def _store_in(pipeline: str | None, files: dict[str, Path]) -> str | None:
    store = config_dir.store_of(pipeline)
    return store if store in files else None


def _local(config: Config, pipeline: str | None) -> str | None:
    return config_dir.pipeline_name(config.store, pipeline)
