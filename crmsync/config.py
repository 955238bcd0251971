"""The configuration model: one TOML file, validated at start-up, every error at once.

This module holds the model and the first half of loading: substituting ``${ENV_VAR}``
references (secrets stay in the environment) and validating the core sections with
pydantic-settings (so ``CRMSYNC_*`` environment variables can override keys, e.g.
``CRMSYNC_STATE__URL``). ``engine.resolve.load_config`` does the whole load: it then
validates each connector's own config model and compiles every pipeline's segment rules
and every destination's mapping file. Problems from all of these are collected into one
``ConfigError`` whose issues each name the TOML key and what to do.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from crmsync import provenance, registry
from crmsync.config_issues import did_you_mean, issues_from, strict_issues
from crmsync.cron import IntervalText
from crmsync.errors import ConfigError, ConfigIssue, CrmsyncError, RecordError
from crmsync.events import EventKind
from crmsync.fields import DEFAULT_WINDOWS, ProfileField, catalogue
from crmsync.normalize import ZoneName
from crmsync.normalize import currency as _currency


def region_code(value: str) -> str:
    """``value`` when it is a region phone numbers know (ISO 3166-1 alpha-2, any case):
    a configuration check, so ``region = "Turkey"`` fails ``check`` instead of
    quarantining every phone number written without a country code."""
    from phonenumbers import SUPPORTED_REGIONS

    code = value.strip().upper()
    if code in SUPPORTED_REGIONS:
        return code
    guess = _region_named(value)
    hint = f"; did you mean {guess!r}?" if guess else ", e.g. 'TR'"
    raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 region code{hint}")


def _region_named(name: str) -> str | None:
    from babel import Locale
    from phonenumbers import SUPPORTED_REGIONS

    names = {v.casefold(): k for k, v in Locale("en").territories.items() if k in SUPPORTED_REGIONS}
    names.update({"turkey": "TR", "turkiye": "TR", "usa": "US", "uk": "GB"})
    close = difflib.get_close_matches(name.strip().casefold(), list(names), n=1, cutoff=0.75)
    return names[close[0]] if close else None


def currency_code(value: str) -> str:
    """``value`` when it is an ISO 4217 code (any case), upper-cased."""
    try:
        return _currency(value)
    except RecordError:
        raise ValueError(f"unknown currency {value!r}; use an ISO 4217 code such as TRY") from None


RegionCode = Annotated[str, AfterValidator(region_code)]
CurrencyCode = Annotated[str, AfterValidator(currency_code)]
SUPPORTED_DATABASES = "sqlite:///path/to/file.db or postgresql://user@host:5432/db"


def state_url(url: str) -> str:
    """``url`` when crmsync can open that kind of database; the error says what to write."""
    found = re.match(r"^([A-Za-z][A-Za-z0-9]*)(?:\+([A-Za-z0-9_]+))?://", url)
    if not found:
        raise ValueError(f"{url!r} is not a database URL; use {SUPPORTED_DATABASES}")
    backend, driver = found.group(1).lower(), (found.group(2) or "").lower()
    if backend == "postgres":
        raise ValueError("'postgres://' is not a database URL scheme; write 'postgresql://'")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return url
    if backend == "postgresql" and driver in ("", "psycopg", "psycopg2"):
        return url
    raise ValueError(
        f"crmsync keeps its state in SQLite or PostgreSQL, not {found.group(0)!r}; "
        f"use {SUPPORTED_DATABASES}"
    )


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateSettings(Section):
    url: str = Field(
        "sqlite:///var/crmsync.db",
        description="SQLAlchemy URL of the state database; relative SQLite paths are relative "
        "to the config file. PostgreSQL: postgresql://user@host:5432/db",
    )

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        return state_url(value)


class DefaultsSettings(Section):
    region: RegionCode = Field(
        "TR", description="region (ISO 3166-1 alpha-2) for phone numbers without a country code"
    )
    timezone: ZoneName = Field("Europe/Istanbul", description="zone of naive times in source data")
    currency: CurrencyCode = Field("TRY", description="ISO 4217 currency of profile amounts")


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
    every: IntervalText | None = Field(
        None, description="for `serve`, instead of schedule: an interval such as 15m, 2h or 1d"
    )
    timezone: ZoneName | None = Field(
        None, description="zone of the schedule (and its DST); default: defaults.timezone"
    )
    jitter_seconds: int | None = Field(
        None, ge=0, description="random delay of up to this before each run; default: serve's"
    )
    currency: CurrencyCode | None = Field(None, description="overrides defaults.currency")
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
    events: bool = Field(
        False,
        description="send e-commerce events (orders, abandoned checkouts) to the destinations "
        "that take them; off until set, so adding events to a pipeline is a decision",
    )
    event_kinds: list[EventKind] | None = Field(
        None,
        description="the event kinds to send (placed_order, ordered_product, fulfilled_order, "
        "cancelled_order, refunded_order, started_checkout, checkout_closed); default: every "
        "kind each destination takes",
    )
    events_live_hours: float = Field(
        24.0,
        gt=0,
        description="an event that happened longer ago than this when it is first sent goes "
        "as historical, so no automation fires on it (a first run's past orders, a cart "
        "abandoned days ago, an import of old orders)",
    )
    cart_expiry_days: float = Field(
        30.0,
        gt=0,
        description="an open cart unchanged this long has expired: a destination that got "
        "its started checkout gets checkout_closed (the cart is deleted or archived there), "
        "and a cart that expired before it was sent as abandoned sends nothing",
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> PipelineSettings:
        if self.schedule and self.every:
            raise ValueError("give schedule (cron) or every (interval), not both")
        return self

    @model_validator(mode="after")
    def _expiry_after_abandonment(self) -> PipelineSettings:
        abandoned = self.profile.abandoned_cart_hours
        if self.cart_expiry_days * 24 <= abandoned:
            raise ValueError(
                f"cart_expiry_days ({self.cart_expiry_days:g}) must be longer than "
                f"profile.abandoned_cart_hours ({abandoned:g} h), or every abandoned cart "
                "would have expired already: raise cart_expiry_days"
            )
        return self


class ServeSettings(Section):
    """How ``crmsync serve`` runs the schedules (``service``)."""

    max_parallel: int = Field(
        4, ge=1, le=64, description="runs of different pipelines at once (one of each at most)"
    )
    misfire_grace_seconds: int = Field(
        300,
        ge=1,
        description="a run late by more than this (e.g. the service was down) is "
        "skipped, and the next one runs on time; missed runs are always coalesced into one",
    )
    jitter_seconds: int = Field(
        0, ge=0, description="random delay of up to this before each run (spreads many stores)"
    )
    stop_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="on SIGTERM/SIGINT: how long runs may take to end after the "
        "batch in flight before the service exits anyway",
    )


class ObserveSettings(Section):
    """What ``crmsync serve`` shows of itself: health, metrics and logs (``service``)."""

    host: str = Field("127.0.0.1", description="address of /healthz, /readyz and /metrics")
    port: int = Field(
        9464, ge=0, le=65535, description="port of /healthz, /readyz and /metrics; 0: none"
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="serve's log lines: auto is JSON unless stderr is a terminal"
    )


class SmtpSettings(Section):
    host: str = Field(description="the SMTP server")
    port: int = Field(25, ge=1, le=65535, description="its port (587: starttls, 465: ssl)")
    security: Literal["none", "starttls", "ssl"] = Field("none", description="TLS, if any")
    username: str | None = Field(None, description="login, when the server asks for one")
    password: SecretStr | None = Field(None, description="from the environment: ${VAR}")
    sender: str = Field(description="the From address")
    to: list[str] = Field(min_length=1, description="who gets the alerts")


class AlertSettings(Section):
    """When ``crmsync serve`` alerts, and where to: one message when a condition starts,
    one when it clears (``service.alerts``)."""

    webhook_url: SecretStr | None = Field(
        None, description="JSON POST of each alert (Slack's incoming webhooks read its text)"
    )
    smtp: SmtpSettings | None = Field(None, description="e-mail each alert")
    failed_share: float = Field(
        0.05, gt=0, le=1, description="alert when more of a run's changes than this failed "
        "or were rejected by a destination",
    )  # fmt: skip
    failed_min_people: int = Field(
        10, ge=1, description="... once a run sent at least this many changes to it"
    )
    not_succeeded_hours: float | None = Field(
        None, gt=0, description="alert when a pipeline has not succeeded for this long"
    )
    timeout_seconds: float = Field(10.0, gt=0, description="for each webhook POST or e-mail")


BROKER_SCHEMES = ("amqp", "amqps", "pyamqp", "redis", "rediss")
BUDGET_SCHEMES = ("redis", "rediss", "unix")


class CelerySettings(Section):
    """Where ``crmsync run --workers celery`` sends a run's tasks and ``crmsync worker``
    takes them from (``distributed``); the state database must be PostgreSQL."""

    broker_url: SecretStr | None = Field(
        None,
        description="the message broker: amqp://user:password@host:5672// (RabbitMQ) or "
        "redis://host:6379/0; a password belongs in ${VAR}",
    )
    result_backend: SecretStr | None = Field(
        None,
        description="Celery's result backend, for tools that watch tasks (flower); crmsync "
        "needs none: the tasks' results meet in the state database",
    )
    queue: str = Field(
        "crmsync", min_length=1, max_length=200, description="the queue runs send tasks to"
    )
    visibility_timeout_seconds: int = Field(
        3600,
        ge=1,
        description="Redis broker: a task not acknowledged this long after a worker took it "
        "(the worker died) is delivered again; keep it above the longest task",
    )
    people_per_slice: int = Field(
        25_000, ge=1, description="people planned by one task (the key space is cut to fit)"
    )
    idle_timeout_seconds: float = Field(
        900.0,
        gt=0,
        description="a run fails when none of a phase's tasks finished for this long "
        "(no worker is running, or none can reach the state database)",
    )
    shared_budget: SecretStr | None = Field(
        None,
        description="a Redis server (redis://host:6379/1, rediss://, unix:///path) holding "
        "every vendor account's rate budget for all workers and the coordinator, so that "
        "together they stay inside the vendor's limits; a destination's own "
        "http.rate.shared takes precedence; a password belongs in ${VAR}",
    )

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        scheme, found, _ = text.partition("://")
        if not found or scheme.lower() not in BROKER_SCHEMES:
            raise ValueError(
                "not a broker crmsync supports; use amqp://user:password@host:5672// "
                "(RabbitMQ) or redis://host:6379/0"
            )
        return SecretStr(text)

    @field_validator("shared_budget")
    @classmethod
    def _redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if text.partition("://")[0].lower() not in BUDGET_SCHEMES:
            raise ValueError(
                "a shared budget is a Redis URL: redis://host:6379/1, rediss://host:6380/1 "
                "or unix:///run/redis.sock"
            )
        return SecretStr(text)

    @field_validator("result_backend")
    @classmethod
    def _a_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if "://" not in text:
            raise ValueError("not a URL; e.g. redis://127.0.0.1:6379/1")
        return SecretStr(text)


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
    serve: ServeSettings = Field(default_factory=ServeSettings, description="crmsync serve")
    observe: ObserveSettings = Field(default_factory=ObserveSettings, description="health")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="alerts")
    celery: CelerySettings = Field(default_factory=CelerySettings, description="workers")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # ``read_settings`` merges the environment itself, to validate each override
        # with the file's values and to name the variable behind an error
        return (init_settings,)


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
    store: str = ""  # the store's name in a directory of stores (``crmsync.config_dir``)

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


@dataclass
class Origins:
    """Where values came from, filled by ``read_settings``: the ``${VAR}`` each key reads
    (dotted key -> variable) and the keys a ``CRMSYNC_*`` override set."""

    variables: dict[str, str] = field(default_factory=dict)
    from_env: set[str] = field(default_factory=set)


def _interpolate(value: Any, key: str, issues: list[ConfigIssue], refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{key}.{k}" if key else k, issues, refs) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", issues, refs) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        refs.setdefault(key, name)
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


def _valid_parts(
    raw: dict[str, Any], issues: list[ConfigIssue], from_env: set[str]
) -> dict[str, Any]:
    """The sections (and named entries) that validate; the rest become issues.

    Validating part by part means one typo does not hide the problems elsewhere: the
    connectors, rules and mappings of the valid parts are still checked.
    """
    clean: dict[str, Any] = {}
    for key, value in raw.items():
        declared = Settings.model_fields.get(key)
        if declared is None:
            hint = did_you_mean(key, list(Settings.model_fields))
            issues.append(ConfigIssue(key, "unknown key", hint))
            continue
        entry_type = _ENTRY_TYPES.get(key)
        if entry_type is not None and isinstance(value, dict):
            kept = {}
            for name, entry in value.items():
                if _valid(entry_type, entry, f"{key}.{name}", issues, from_env):
                    kept[name] = entry
            clean[key] = kept
        elif _valid(declared.annotation or Any, value, key, issues, from_env):
            clean[key] = value
    return clean


def _valid(
    type_: Any, value: object, key: str, issues: list[ConfigIssue], from_env: set[str]
) -> bool:
    try:
        TypeAdapter(type_).validate_python(value)
    except ValidationError as exc:
        issues.extend(issues_from(exc, key, raw=value, model=type_))
        return False
    found = strict_issues(type_, value, key, from_env)
    issues.extend(found)
    return not found


def _resolve_state_url(url: str, base: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str((base / url[len(prefix) :]).resolve())
    return url


def read_settings(
    path: Path,
    issues: list[ConfigIssue],
    origins: Origins | None = None,
    raw: dict[str, Any] | None = None,
) -> Settings:
    """Reads the TOML, merges the ``CRMSYNC_*`` overrides over it and validates the core
    sections; what is wrong goes to ``issues`` (a file that cannot be read at all raises
    ConfigError). ``raw``: the table already read (a store's file merged over its base)."""
    raw = read_toml(path) if raw is None else raw
    origins = Origins() if origins is None else origins
    raw = _interpolate(raw, "", issues, origins.variables)
    issues.extend(provenance.unknown_variables(_overridable()))
    _merge(raw, EnvSettingsSource(Settings)(), "", origins.from_env)
    try:
        return Settings(**_valid_parts(raw, issues, origins.from_env))
    except ValidationError as exc:  # not expected: every part was validated above
        raise ConfigError(issues + issues_from(exc)) from exc


def read_toml(path: Path) -> dict[str, Any]:
    """The file's table; ConfigError when it cannot be read or is not TOML."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found", hint="pass --config FILE") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path} is a directory", hint="pass --config FILE") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text", hint="save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="pass --config FILE") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the syntax") from exc
    return raw


def _merge(into: dict[str, Any], over: Mapping[str, Any], key: str, seen: set[str]) -> None:
    """Deep-merges the environment's ``over`` into the file's values, noting each key
    it set."""
    for name, value in over.items():
        path = f"{key}.{name}" if key else name
        current = into.get(name)
        if isinstance(current, dict) and isinstance(value, Mapping):
            _merge(current, value, path, seen)
        else:
            into[name] = value
            seen.add(path)
            if isinstance(value, Mapping):
                seen.update(_leaves(value, path))


def _leaves(value: Mapping[str, Any], key: str) -> list[str]:
    out: list[str] = []
    for name, inner in value.items():
        path = f"{key}.{name}"
        out.extend(_leaves(inner, path) if isinstance(inner, Mapping) else [path])
    return out


def _overridable() -> list[str]:
    """Dotted patterns of the keys an environment variable may set (``*``: any name)."""
    out: list[str] = []
    for name, declared in Settings.model_fields.items():
        annotation = declared.annotation
        if name in _ENTRY_TYPES:
            out.append(f"{name}.*")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(f"{name}.{inner}" for inner in annotation.model_fields)
        else:
            out.append(name)
    return out


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
    group: str,
    section: str,
    name: str,
    raw: Mapping[str, Any],
    issues: list[ConfigIssue],
    origins: Origins | None = None,
) -> ConnectorSpec | None:
    """The connector's validated config, or None with its problems added to ``issues``.

    The model is validated with a context holding, per key of its own table, the
    environment variable a ``${VAR}`` reference read (``{"variables": {"api_key":
    "MC_KEY"}}``), so a connector's hints can name the variable the operator really set.
    """
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
    except ConfigError as exc:
        issues.extend(exc.issues)
        return None
    except CrmsyncError as exc:
        issues.append(ConfigIssue(f"{key}.kind", str(exc)))
        return None
    origins = origins or Origins()
    local = {k[len(key) + 1 :]: v for k, v in origins.variables.items() if k.startswith(key + ".")}
    model = cls.config_model
    try:
        config = model.model_validate(dict(raw), context={"variables": local})
    except ConfigError as exc:  # raised by a validator: keys relative to the connector
        issues.extend(_qualified(issue, key) for issue in exc.issues)
        return None
    except ValidationError as exc:
        issues.extend(issues_from(exc, key, raw=dict(raw), model=model))
        return None
    except CrmsyncError as exc:
        issues.append(ConfigIssue(key, str(exc)))
        return None
    found = strict_issues(model, dict(raw), key, origins.from_env)
    issues.extend(found)
    return None if found else ConnectorSpec(name=name, kind=kind, cls=cls, config=config)


def _qualified(issue: ConfigIssue, prefix: str) -> ConfigIssue:
    if issue.key.startswith(prefix + ".") or issue.key == prefix:
        return issue
    key = prefix if issue.key in ("", "<config>") else f"{prefix}.{issue.key}"
    return ConfigIssue(key, issue.message, issue.hint, issue.where)


__all__ = [
    "Config",
    "ConnectorSpec",
    "DestinationSpec",
    "PipelineSpec",
    "Settings",
    "catalogue",
]
