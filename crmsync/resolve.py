"""The second half of loading a configuration: connectors, pipelines, rules and mappings.

Kept apart from ``config`` so the core model stays importable without the connectors, and
so each check adds its issues to one list instead of stopping at the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crmsync import registry
from crmsync.config import (
    Config,
    ConnectorSpec,
    DestinationSpec,
    PipelineSpec,
    Settings,
    make_config,
    validate_connector,
)
from crmsync.errors import ConfigError, ConfigIssue, RecordError
from crmsync.fields import catalogue
from crmsync.normalize import currency as normalize_currency


def resolve(settings: Settings, path: Path, issues: list[ConfigIssue]) -> Config:
    sources: dict[str, ConnectorSpec] = {}
    for name, raw in settings.sources.items():
        spec = validate_connector(registry.SOURCES, "sources", name, raw, issues)
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
        spec = validate_connector(registry.DESTINATIONS, "destinations", name, body, issues)
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
        currency = pipeline.currency or settings.defaults.currency
        try:
            currency = normalize_currency(currency)
        except RecordError:
            issues.append(
                ConfigIssue(
                    f"{key}.currency",
                    f"unknown currency {currency!r}",
                    "use an ISO 4217 code such as TRY",
                )
            )
        if pipeline.schedule:
            from scheduler import cron_trigger

            try:
                cron_trigger(pipeline.schedule, f"{key}.schedule", settings.defaults.timezone)
            except ConfigError as exc:
                issues.extend(exc.issues)
        segments = _compile_segments(settings, pname, pipeline.segments, fields, issues)
        for ref in pipeline.destinations:
            if ref in dest_specs and ref not in destinations:
                mapping = _load_mapping(
                    ref, dest_specs[ref].kind, raw_destinations[ref][1], path.parent, fields, issues
                )
                if mapping is not None:
                    spec = dest_specs[ref]
                    _check_tag_prefix(ref, spec.config, mapping, issues)
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


def _check_tag_prefix(name: str, config: Any, mapping: Any, issues: list[ConfigIssue]) -> None:
    """A destination that guards its own tag prefix must guard the mapping's."""
    own = getattr(config, "tag_prefix", None)
    if own is not None and own != mapping.tag_prefix:
        issues.append(
            ConfigIssue(
                f"destinations.{name}.tag_prefix",
                f"{own!r} differs from the mapping's [tags] prefix {mapping.tag_prefix!r}",
                "make them equal, or every tag change would be refused",
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
            issues.append(ConfigIssue(where, str(error), "fields are listed by `crmsync fields`"))
        return None


def _load_mapping(
    name: str,
    kind: str,
    mapping: str | None,
    base: Path,
    fields: Any,
    issues: list[ConfigIssue],
) -> Any:
    from mappings import builtin_mapping_path, load_mapping

    key = f"destinations.{name}.mapping"
    try:
        path = (base / mapping) if mapping else builtin_mapping_path(kind)
        if not path.exists():
            issues.append(ConfigIssue(key, f"mapping file {path} not found", "fix the path"))
            return None
        return load_mapping(path, fields, kind=kind)
    except ConfigError as exc:
        for issue in exc.issues:
            issues.append(
                ConfigIssue(f"{key} ({mapping or kind}) {issue.key}", issue.message, issue.hint)
            )
        return None
