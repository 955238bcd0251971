"""Loading a configuration: the core model (``config``), then connectors, pipelines,
rules and mappings.

Kept apart from ``config`` so the core model stays importable without the connectors, and
so each check adds its issues to one list instead of stopping at the first.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from crmsync import config_dir, registry
from crmsync.config import (
    Config,
    ConnectorSpec,
    DestinationSpec,
    Origins,
    PipelineSpec,
    Settings,
    make_config,
    read_settings,
    read_toml,
    validate_connector,
)
from crmsync.contract import ConnectorConfig
from crmsync.cron import cron_trigger
from crmsync.errors import ConfigError, ConfigIssue
from crmsync.fields import catalogue
from crmsync.provenance import annotate, line_of, toml_lines


def load_config(path: str | Path, store: str | None = None) -> Config:
    """Reads and validates the whole configuration; raises ConfigError listing every issue.

    ``path`` is one file, or a directory of store files (``crmsync.config_dir``) of which
    ``store`` names the one to load.
    """
    path = Path(path)
    if path.is_dir():
        return load_store(path, store or "")
    if store:
        raise ConfigError(
            f"{path} is one configuration file, not a directory of stores",
            key="--store",
            hint="leave out --store, or pass --config DIR with a file per store",
        )
    issues: list[ConfigIssue] = []
    origins = Origins()
    config = resolve(read_settings(path, issues, origins), path, issues, origins)
    if issues:
        raise ConfigError(annotate(issues, path))
    return config


def load_store(directory: Path, name: str) -> Config:
    """One store of a directory: its file merged over the base, validated on its own, its
    names qualified with its own. ConfigError lists its issues, each with its file."""
    files = config_dir.store_files(directory)
    path = files.get(name)
    if path is None:
        raise ConfigError(
            f"no store {name!r} in {directory}" if name else f"{directory} is a directory",
            key="--store",
            hint=f"name one of its stores with --store: {', '.join(files) or 'none'}",
        )
    bad_name = config_dir.store_name_issue(name)
    if bad_name is not None:
        raise ConfigError([replace(bad_name, where=path.name)])
    base = config_dir.base_file(directory)
    own = read_toml(path)
    issues = config_dir.shared_section_issues(own)
    shared = set(config_dir.SHARED_SECTIONS)
    raw = config_dir.merged(
        read_toml(base) if base else {}, {k: v for k, v in own.items() if k not in shared}
    )
    issues += config_dir.long_name_issues(name, raw)
    origins = Origins()
    config = resolve(read_settings(path, issues, origins, raw=raw), path, issues, origins)
    if issues:
        raise ConfigError(_annotate_store(issues, path, base))
    return config_dir.qualify(config, name)


def _annotate_store(issues: list[ConfigIssue], path: Path, base: Path | None) -> list[ConfigIssue]:
    """Each issue with the line of the store's file or, for a value from the base, of the
    base; at least with the store's file name."""
    lines = toml_lines(base.read_text(encoding="utf-8")) if base else {}
    out = []
    for issue in annotate(issues, path):
        where = issue.where
        if base is not None and (not where or where.endswith(", in this table")):
            found = line_of(issue.key, lines)
            if found is not None and found[1]:
                where = f"{base.name}:{found[0]}"
        out.append(replace(issue, where=where or path.name))
    return out


def resolve(
    settings: Settings, path: Path, issues: list[ConfigIssue], origins: Origins | None = None
) -> Config:
    sources: dict[str, ConnectorSpec] = {}
    for name, raw in settings.sources.items():
        spec = validate_connector(registry.SOURCES, "sources", name, raw, issues, origins)
        if spec:
            sources[name] = spec

    raw_destinations: dict[str, tuple[dict[str, Any], str | None]] = {}
    dest_specs: dict[str, ConnectorSpec] = {}
    for name, raw in settings.destinations.items():
        body = dict(raw)
        mapping = body.pop("mapping", None)
        if mapping is not None and not isinstance(mapping, str):
            issues.append(ConfigIssue(f"destinations.{name}.mapping", "must be a file path"))
            mapping = None
        raw_destinations[name] = (body, mapping)
        spec = validate_connector(
            registry.DESTINATIONS, "destinations", name, body, issues, origins
        )
        if spec:
            dest_specs[name] = spec

    used_by: dict[str, str] = {}
    pipelines: dict[str, PipelineSpec] = {}
    destinations: dict[str, DestinationSpec] = {}
    for pname, pipeline in settings.pipelines.items():
        key = f"pipelines.{pname}"
        fields = catalogue(pipeline.profile.windows_days)
        for ref in pipeline.sources:
            if ref not in settings.sources:
                issues.append(
                    ConfigIssue(
                        f"{key}.sources",
                        f"no source named {ref!r}",
                        f"defined: {', '.join(settings.sources) or 'none'}",
                    )
                )
        for ref in pipeline.destinations:
            if ref not in settings.destinations:
                issues.append(
                    ConfigIssue(
                        f"{key}.destinations",
                        f"no destination named {ref!r}",
                        f"defined: {', '.join(settings.destinations) or 'none'}",
                    )
                )
            elif ref in used_by:
                issues.append(
                    ConfigIssue(
                        f"{key}.destinations",
                        f"destination {ref!r} is already fed by pipeline {used_by[ref]!r}",
                        "give each pipeline its own destination (its own list or account)",
                    )
                )
            else:
                used_by[ref] = pname
        # both validated where they are written (defaults.currency, pipelines.*.currency)
        currency = pipeline.currency or settings.defaults.currency
        if pipeline.schedule:
            try:
                cron_trigger(pipeline.schedule, f"{key}.schedule", settings.defaults.timezone)
            except ConfigError as exc:
                issues.extend(exc.issues)
        segments = _compile_segments(settings, pname, pipeline.segments, fields, issues)
        for ref in pipeline.destinations:
            if ref in dest_specs and ref not in destinations:
                spec = dest_specs[ref]
                mapping = _load_mapping(
                    ref, spec, raw_destinations[ref][1], path.parent, fields, issues
                )
                if mapping is not None:
                    _check_owned_prefix(ref, spec.config, mapping, issues)
                    destinations[ref] = DestinationSpec(
                        spec.name, spec.kind, spec.cls, spec.config, mapping
                    )
        if segments is None:
            continue
        pipelines[pname] = PipelineSpec(
            name=pname,
            settings=pipeline,
            currency=currency,
            sources=tuple(sources[s] for s in pipeline.sources if s in sources),
            destinations=tuple(destinations[d] for d in pipeline.destinations if d in destinations),
            segments=segments,
            fields=fields,
        )
    return make_config(settings, path, sources, destinations, pipelines)


def _check_owned_prefix(
    name: str, config: ConnectorConfig, mapping: Any, issues: list[ConfigIssue]
) -> None:
    """A destination that guards its own group prefix must guard the mapping's."""
    own = config.owned_prefix()
    if own is not None and own != mapping.prefix:
        issues.append(
            ConfigIssue(
                f"destinations.{name}.{config.owned_prefix_key}",
                f"{own!r} differs from the mapping's [memberships] prefix {mapping.prefix!r}",
                "make them equal, or every membership change would be refused",
            )
        )


def _compile_segments(
    settings: Settings,
    pname: str,
    wanted: list[str] | None,
    fields: Any,
    issues: list[ConfigIssue],
) -> Any:
    from crmsync.segments import DEFAULT_SEGMENTS, SegmentErrors, SegmentSet

    available: dict[str, str] = dict(DEFAULT_SEGMENTS) if settings.default_segments else {}
    available.update({name: seg.rule for name, seg in settings.segments.items()})
    if wanted is None:
        rules = available
    else:
        rules = {}
        for name in wanted:
            if name in available:
                rules[name] = available[name]
            else:
                issues.append(
                    ConfigIssue(
                        f"pipelines.{pname}.segments",
                        f"no segment {name!r}",
                        f"define [segments.{name}] or use one of: {', '.join(sorted(available))}",
                    )
                )
    try:
        return SegmentSet.compile(rules, fields)
    except SegmentErrors as exc:
        for name, error in exc.errors:
            where = f"segments.{name}.rule" if name in settings.segments else f"segments.{name}"
            issues.append(ConfigIssue(where, str(error)))
        return None


def _load_mapping(
    name: str,
    spec: ConnectorSpec,
    mapping: str | None,
    base: Path,
    fields: Any,
    issues: list[ConfigIssue],
) -> Any:
    from mappings import load_mapping

    key = f"destinations.{name}.mapping"
    rules = getattr(spec.cls, "mapping_rules", None)
    try:
        path = (base / mapping) if mapping else registry.default_mapping(spec.kind, key=key)
        if not path.is_file():
            issues.append(ConfigIssue(key, f"mapping file {path} not found", "fix the path"))
            return None
        return load_mapping(path, fields, kind=spec.kind, rules=rules)
    except ConfigError as exc:
        for issue in exc.issues:
            issues.append(
                ConfigIssue(
                    f"{key} ({mapping or spec.kind}) {issue.key}", issue.message, issue.hint
                )
            )
        return None
