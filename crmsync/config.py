"""The configuration model: one TOML file, validated at start-up, every error at once.

This module holds the model and the first half of loading: substituting ``${ENV_VAR}``
references (secrets stay in the environment) and validating the core sections with
pydantic-settings (so ``CRMSYNC_*`` environment variables can override keys, e.g.
``CRMSYNC_STATE__URL``). ``crmsync.resolve.load_config`` does the whole load: it then
validates each connector's own config model and compiles every pipeline's segment rules
and every destination's mapping file. Problems from all of these are collected into one
``ConfigError`` whose issues each name the TOML key and what to do.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from crmsync import registry
from crmsync.errors import ConfigError, ConfigIssue, CrmsyncError
from crmsync.fields import DEFAULT_WINDOWS, ProfileField, catalogue
from crmsync.normalize import ZoneName


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSettings(Section):
    url: str = Field(
        "sqlite:///var/crmsync.db",
        description="SQLAlchemy URL of the state database; relative SQLite paths are relative "
        "to the config file. PostgreSQL: postgresql://user@host:5432/db",
    )


class DefaultsSettings(Section):
    region: str = Field("TR", description="region for phone numbers without a country code")
    timezone: ZoneName = Field("Europe/Istanbul", description="zone of naive times in source data")
    currency: str = Field("TRY", description="ISO 4217 currency of profile amounts")


class RfmSettings(Section):
    """Fixed thresholds rather than population quintiles, so that one customer's new order
    never moves another customer's score (and so never causes another person's update)."""

    recency_days: list[int] = Field(
        [30, 90, 180, 365],
        description="last order within [0] days scores 5, within [1] 4, [2] 3, [3] 2, else 1",
    )
    frequency_orders: list[int] = Field(
        [2, 3, 5, 10], description="orders needed for scores 2, 3, 4 and 5"
    )
    monetary: list[float] = Field(
        [500, 1500, 4000, 10000], description="spend needed for scores 2, 3, 4 and 5"
    )

    @field_validator("recency_days", "frequency_orders", "monetary")
    @classmethod
    def _four_ascending(cls, value: list[Any]) -> list[Any]:
        if len(value) != 4 or sorted(value) != value:
            raise ValueError("needs exactly four thresholds in ascending order")
        return value


class ProfileSettings(Section):
    windows_days: list[int] = Field(
        list(DEFAULT_WINDOWS), description="spend/order windows: makes spent_<N>d and orders_<N>d"
    )
    abandoned_cart_hours: float = Field(
        4.0, gt=0, description="an open cart older than this is abandoned"
    )
    new_days: int = Field(30, gt=0, description="lifecycle 'new': first order within N days")
    at_risk_days: int = Field(90, gt=0, description="lifecycle 'at_risk': no order for N days")
    lapsed_days: int = Field(180, gt=0, description="lifecycle 'lapsed': no order for N days")
    rfm: RfmSettings = Field(default_factory=RfmSettings, description="RFM score thresholds")


class SegmentSettings(Section):
    rule: str = Field(description="rule in the segment language, e.g. spent_30d > 500")
    description: str = Field("", description="what the segment is for")


class PipelineSettings(Section):
    sources: list[str] = Field(min_length=1, description="names of [sources.*] to merge")
    destinations: list[str] = Field(min_length=1, description="names of [destinations.*]")
    segments: list[str] | None = Field(
        None, description="segments to compute; default: all defined and built-in ones"
    )
    schedule: str | None = Field(None, description="cron expression (5 fields) for `serve`")
    currency: str | None = Field(None, description="overrides defaults.currency")
    lookback_minutes: float = Field(
        10.0, ge=0, description="re-read this much before each cursor, for late writes"
    )
    max_attempts: int = Field(5, ge=1, description="tries for a record a destination failed")
    retry_minutes: float = Field(15.0, gt=0, description="first wait before re-trying a record")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="processes that build, segment, map and diff profiles; default: 2 for "
        "a store of 50,000 customers or more on a machine with 2 cores or more, else 1 "
        "(starting one takes about a second); 1 also reads a large export in the run's "
        "own process instead of in reader processes beside its staging",
    )
    profile: ProfileSettings = Field(default_factory=ProfileSettings, description="metrics")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", env_prefix="CRMSYNC_", env_nested_delimiter="__", frozen=True
    )

    state: StateSettings = Field(default_factory=StateSettings, description="state DB")
    defaults: DefaultsSettings = Field(default_factory=DefaultsSettings, description="defaults")
    sources: dict[str, dict[str, Any]] = Field(default_factory=dict, description="sources")
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict, description="sinks")
    default_segments: bool = Field(True, description="include the built-in segments")
    segments: dict[str, SegmentSettings] = Field(default_factory=dict, description="rules")
    pipelines: dict[str, PipelineSettings] = Field(default_factory=dict, description="jobs")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


_ENTRY_TYPES: dict[str, Any] = {
    "sources": dict[str, Any],
    "destinations": dict[str, Any],
    "segments": SegmentSettings,
    "pipelines": PipelineSettings,
}


@dataclass(frozen=True)
class ConnectorSpec:
    name: str
    kind: str
    cls: Any  # the connector class from the registry
    config: Any  # its validated config model


@dataclass(frozen=True)
class DestinationSpec(ConnectorSpec):
    mapping: Any  # mappings.CompiledMapping


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    settings: PipelineSettings
    currency: str
    sources: tuple[ConnectorSpec, ...]
    destinations: tuple[DestinationSpec, ...]
    segments: Any  # crmsync.segments.SegmentSet
    fields: Mapping[str, ProfileField]


@dataclass(frozen=True)
class Config:
    path: Path
    settings: Settings
    state_url: str
    sources: Mapping[str, ConnectorSpec]
    destinations: Mapping[str, DestinationSpec]
    pipelines: Mapping[str, PipelineSpec]

    def pipeline(self, name: str | None) -> list[PipelineSpec]:
        if name is None:
            return list(self.pipelines.values())
        if name not in self.pipelines:
            raise ConfigError(
                f"no pipeline named {name!r}",
                key="pipelines",
                hint=f"defined: {', '.join(self.pipelines) or 'none'}",
            )
        return [self.pipelines[name]]


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, key: str, issues: list[ConfigIssue]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}" if key else k, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None:
            if default is not None:
                return default
            issues.append(
                ConfigIssue(key, f"environment variable {name} is not set", f"export {name}=...")
            )
            return ""
        return found

    return _ENV.sub(replace, value)


def _issues_from(exc: ValidationError, prefix: str = "") -> list[ConfigIssue]:
    out: list[ConfigIssue] = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        key = f"{prefix}.{key}" if prefix and key else (prefix or key or "<config>")
        kind = error["type"]
        if kind == "extra_forbidden":
            out.append(ConfigIssue(key, "unknown key", "check the spelling against the docs"))
        elif kind == "missing":
            out.append(ConfigIssue(key, "required key is missing", "add it"))
        else:
            out.append(ConfigIssue(key, error["msg"], f"got {_short(error.get('input'))}"))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_parts(raw: dict[str, Any], issues: list[ConfigIssue]) -> dict[str, Any]:
    """The sections (and named entries) that validate; the rest become issues.

    Validating part by part means one typo does not hide the problems elsewhere: the
    connectors, rules and mappings of the valid parts are still checked.
    """
    clean: dict[str, Any] = {}
    for key, value in raw.items():
        field = Settings.model_fields.get(key)
        if field is None:
            issues.append(ConfigIssue(key, "unknown key", "check the spelling against the docs"))
            continue
        entry_type = _ENTRY_TYPES.get(key)
        if entry_type is not None and isinstance(value, dict):
            kept = {}
            for name, entry in value.items():
                try:
                    TypeAdapter(entry_type).validate_python(entry)
                    kept[name] = entry
                except ValidationError as exc:
                    issues.extend(_issues_from(exc, f"{key}.{name}"))
            clean[key] = kept
            continue
        try:
            TypeAdapter(field.annotation or Any).validate_python(value)
            clean[key] = value
        except ValidationError as exc:
            issues.extend(_issues_from(exc, key))
    return clean


def _resolve_state_url(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def read_settings(path: Path, issues: list[ConfigIssue]) -> Settings:
    """Reads the TOML and validates the core sections; what is wrong goes to ``issues``
    (a file that cannot be read at all raises ConfigError)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found", hint="pass --config FILE") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax") from exc
    raw = _interpolate(raw, "", issues)
    try:
        return Settings(**_valid_parts(raw, issues))
    except ValidationError as exc:  # from the environment overrides
        raise ConfigError(issues + _issues_from(exc)) from exc


def make_config(
    settings: Settings,
    path: Path,
    sources: Mapping[str, ConnectorSpec],
    destinations: Mapping[str, DestinationSpec],
    pipelines: Mapping[str, PipelineSpec],
) -> Config:
    return Config(
        path=path,
        settings=settings,
        state_url=_resolve_state_url(settings.state.url, path.parent.resolve()),
        sources=sources,
        destinations=destinations,
        pipelines=pipelines,
    )


def validate_connector(
    group: str, section: str, name: str, raw: Mapping[str, Any], issues: list[ConfigIssue]
) -> ConnectorSpec | None:
    key = f"{section}.{name}"
    kind = raw.get("kind")
    if not isinstance(kind, str):
        issues.append(
            ConfigIssue(
                f"{key}.kind",
                "required key is missing",
                f"one of: {', '.join(registry.kinds(group))}",
            )
        )
        return None
    try:
        cls = registry.load(group, kind, key=f"{key}.kind")
        config = cls.config_model.model_validate(dict(raw))
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
    except ValidationError as exc:
        issues.extend(_issues_from(exc, key))
        return None
    except CrmsyncError as exc:
        issues.append(ConfigIssue(key, str(exc)))
        return None
    return ConnectorSpec(name=name, kind=kind, cls=cls, config=config)


__all__ = [
    "Config",
    "ConnectorSpec",
    "DestinationSpec",
    "PipelineSpec",
    "Settings",
    "catalogue",
]
