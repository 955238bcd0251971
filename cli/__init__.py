"""The command line (the ``crmsync`` script): check, plan, run, backfill, status, migrate
and helpers.

Results go to stdout (``--json`` for machines), logs and progress to stderr; progress is
shown only on a terminal.

Exit codes: 0 success; 1 the run failed (a source or destination failed as a whole);
2 configuration error; 3 state database error; 4 the pipeline is already running;
5 finished, but some records were refused or failed at a destination (see ``status``);
130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from crmsync import arenas, gc_pace, log_setup
from crmsync.config import Config, PipelineSpec
from crmsync.contract import Check, FieldSpec
from crmsync.errors import ConfigError, CrmsyncError, StateError
from crmsync.events import EventDestination, EventKind
from crmsync.phase_log import PhaseLog
from crmsync.progress import Progress, Tee
from crmsync.runs import interrupt_exit_code, interrupt_reason, interruption
from crmsync.stopping import stop_on_signals
from engine.pipeline import PipelineBusy, RunOptions, RunReport, context_for, run_pipeline
from engine.report import render_report, render_status, status_data
from engine.resolve import load_config
from engine.targets import Selection, select
from state.store import Store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_STATE, EXIT_BUSY, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5
DEFAULT_CONFIG = "crmsync.toml"


def _fail(code: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        lines = "\n".join(f"  - {issue}" for issue in exc.issues)
        _fail(EXIT_CONFIG, f"configuration error ({len(exc.issues)} issue(s)):\n{lines}")
    except StateError as exc:
        _fail(EXIT_STATE, f"state database error: {exc}")
    except PipelineBusy as exc:
        _fail(EXIT_BUSY, str(exc))
    except CrmsyncError as exc:  # a connector's, or e.g. a profile worker that died
        _fail(EXIT_FAILED, f"run failed: {exc}")
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM within ``stop_on_signals``
        _fail(interrupt_exit_code(exc), interrupt_reason(exc))
    except RuntimeError as exc:  # a lock's release failed after a signal landed in it
        stopped = interruption(exc)
        if stopped is None:
            raise
        _fail(interrupt_exit_code(stopped), interrupt_reason(stopped))
    except OSError as exc:  # a file or directory the command was pointed at
        where = f" {exc.filename}" if exc.filename else ""
        _fail(EXIT_FAILED, f"failed: cannot use{where}: {exc.strerror or exc}")


def _load(path: str, store: str | None = None) -> Config:
    """The configuration file's, or that of the directory's store ``store``."""
    return load_config(path, store)


def _broken(selection: Selection) -> int:
    """Reports the stores of a directory that did not load (stderr); returns how many."""
    for name, exc in selection.broken.items():
        lines = "\n".join(f"  - {issue}" for issue in exc.issues)
        click.echo(
            f"store {name}: configuration error ({len(exc.issues)} issue(s)), not used:\n{lines}",
            err=True,
        )
    return len(selection.broken)


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time", param_hint=option
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _progress(enabled: bool) -> Progress:
    """The run's progress: phase lines for ``-v`` always; live bars too when asked for
    and stderr is a terminal (rich is imported only then)."""
    phases = PhaseLog()
    if not enabled or not sys.stderr.isatty():
        return phases
    from crmsync.progress_rich import RichProgress

    return Tee(phases, RichProgress())


config_option = click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(),
    help="the TOML configuration file, or a directory with one file per store",
)
store_option = click.option(
    "--store",
    "store_name",
    help="with a directory for --config: only this store (default: every store)",
)
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON to stdout")
workers_option = click.option(
    "--workers",
    type=click.Choice(["local", "celery"]),
    default="local",
    show_default=True,
    help="local: this process (and its own worker processes); celery: the Celery workers "
    "of [celery] (crmsync worker), with the state in PostgreSQL",
)
wait_option = click.option(
    "--wait/--no-wait",
    default=False,
    show_default=True,
    help="when another process (serve) runs the pipeline: wait for it instead of exiting 4",
)
wait_timeout_option = click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="with --wait: seconds to wait at most, then exit 4",
)

job_wait_option = click.option(
    "--job-wait",
    type=click.FloatRange(min=0),
    default=RunOptions.job_wait_seconds,
    show_default=True,
    help=(
        "seconds the run waits at its end for destinations' import jobs (Klaviyo's);"
        " those still running then are settled by the next run"
    ),
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crmsync", message="crmsync %(version)s")
@click.option("-v", "--verbose", count=True, help="-v info, -vv debug logs on stderr")
def main(verbose: int) -> None:
    """crmsync: customers, orders and carts into marketing tools."""
    arenas.limit()  # before any thread of the command starts
    gc_pace.widen()
    log_setup.configure(verbose)


@main.command()
@config_option
@store_option
@click.option(
    "--offline", is_flag=True, help="validate only; do not contact sources or destinations"
)
def check(config_path: str, store_name: str | None, offline: bool) -> None:
    """Validate the configuration (every error at once) and test every connector.

    With a directory of stores: every store (or --store NAME), each with its own errors."""
    with _errors():
        chosen = select(config_path, store_name)
        broken = _broken(chosen)
        for config in chosen.configs:
            where = f"store {config.store} ({config.path})" if config.store else config_path
            click.echo(
                f"configuration {where}: ok ({len(config.pipelines)} pipeline(s), "
                f"{len(config.sources)} source(s), {len(config.destinations)} destination(s))"
            )
        for url in dict.fromkeys(config.state_url for config in chosen.configs):
            Store(url).close()
            click.echo("state database: ok")
        bad = sum(_check_connectors(config, offline) for config in chosen.configs)
        if broken:
            _fail(EXIT_CONFIG, f"{broken} store(s) with configuration errors (above)")
        if bad and offline:
            _fail(EXIT_CONFIG, "a source cannot be read as configured")
        if bad:
            _fail(EXIT_CONFIG, f"{bad} check(s) failed")


def _check_connectors(config: Config, offline: bool) -> int:
    """Samples the sources (only local ones when ``offline``) and, online, checks every
    connector; returns the failures."""
    if offline:
        return _sample_sources(config, offline=True)
    bad = 0
    failed: set[str] = set()
    mapped = _mapped_fields(config)
    eventful = _event_kinds(config)
    specs = [*config.sources.values(), *config.destinations.values()]
    for spec in specs:
        connector = spec.cls(spec.config, context_for(config, spec.name))
        try:
            if spec.name in config.destinations:
                results = connector.check(mapped.get(spec.name, []))
                results += _event_checks(connector, eventful.get(spec.name))
            else:
                results = connector.check()
            for result in results:
                bad += not result.ok
                if not result.ok:
                    failed.add(spec.name)
                mark = "ok " if result.ok else "FAIL"
                detail = f": {result.detail}" if result.detail else ""
                click.echo(f"  [{mark}] {spec.name} ({spec.kind}) {result.what}{detail}")
        finally:
            connector.close()
    bad += _sample_sources(config, offline=False, skip=failed)
    return bad


def _sample_sources(config: Config, *, offline: bool, skip: set[str] | None = None) -> int:
    """Reads the first records of every stream through its mapping, as a run would: a
    stream that cannot be read is a failure (counted), one whose records would mostly be
    quarantined a warning. With --offline, only sources that read local files
    (``reads_network = False``) are sampled; sources in ``skip`` failed a check already."""
    from crmsync.sample_read import sample_stream

    until = datetime.now(UTC)
    failures = 0
    for spec in config.sources.values():
        if (offline and getattr(spec.cls, "reads_network", True)) or spec.name in (skip or ()):
            continue
        connector = spec.cls(spec.config, context_for(config, spec.name))
        try:
            for stream in connector.streams():
                where = f"sample of {spec.name} ({spec.kind})"
                try:
                    sample = sample_stream(connector, stream, until)
                except ConfigError as exc:
                    failures += 1
                    click.echo(f"  [FAIL] {where} {stream}: {exc}")
                    continue
                except (CrmsyncError, OSError) as exc:
                    click.echo(f"  [WARN] {where} {stream} not read: {exc}")
                    continue
                mark = "WARN" if sample.mostly_quarantined else "ok "
                click.echo(f"  [{mark}] {where} {sample.describe()}")
                if sample.mostly_quarantined:
                    click.echo(
                        f"         a run would quarantine most {stream}: check the mapping of "
                        f"sources.{spec.name}.{stream} and [defaults] (region, timezone)"
                    )
        finally:
            connector.close()
    return failures


def _event_kinds(config: Config) -> dict[str, set[EventKind]]:
    """Per destination, the event kinds the pipelines with events on may send it."""
    found: dict[str, set[EventKind]] = {}
    for pipeline in config.pipelines.values():
        if pipeline.settings.events:
            wanted = set(pipeline.settings.event_kinds or EventKind)
            for destination in pipeline.destinations:
                found.setdefault(destination.name, set()).update(wanted)
    return found


def _event_checks(connector: object, wanted: set[EventKind] | None) -> list[Check]:
    """A destination's checks for the events a pipeline sends it (its scopes for them),
    when it takes events and offers them (``check_events``)."""
    check_events = getattr(connector, "check_events", None)
    if not wanted or not isinstance(connector, EventDestination) or check_events is None:
        return []
    kinds = [kind for kind in connector.event_names() if kind in wanted]
    return list(check_events(kinds)) if kinds else []


def _mapped_fields(config: Config) -> dict[str, list[FieldSpec]]:
    """Per destination, the fields of every mapping that sends to it in any pipeline, so
    that ``check`` finds a field the destination holds with another type before a run."""
    found: dict[str, dict[FieldSpec, None]] = {}
    for pipeline in config.pipelines.values():
        for destination in pipeline.destinations:
            fields = found.setdefault(destination.name, {})
            fields.update(dict.fromkeys(destination.mapping.field_specs()))
    return {name: list(fields) for name, fields in found.items()}


def _run(
    config_path: str,
    pipeline: str | None,
    options: RunOptions,
    as_json: bool,
    store_name: str | None = None,
    wait: float | None = None,
    runner: Runner = run_pipeline,
) -> None:
    with _errors(), stop_on_signals():
        chosen = select(config_path, store_name, pipeline)
        reports: list[RunReport] = []
        try:
            for target in chosen.targets:  # one per store of a directory
                store = Store(target.config.state_url)
                try:
                    for spec in target.pipelines:
                        reports.append(
                            _run_leased(target.config, spec, store, options, wait, runner)
                        )
                finally:
                    store.close()
        finally:
            options.progress.close()
        if as_json:
            click.echo(json.dumps([r_json(r) for r in reports], indent=2, default=str))
        else:
            for report in reports:
                click.echo(render_report(report))
        broken = _broken(chosen)
        if any(r.status == "failed" for r in reports):
            sys.exit(EXIT_FAILED)
        if broken:
            _fail(EXIT_CONFIG, f"{broken} store(s) not run: their configuration has errors")
        if any(r.status == "partial" for r in reports):
            sys.exit(EXIT_PARTIAL)


WAIT_POLL = 2.0  # seconds between tries for a pipeline's lease (--wait)
Runner = Callable[[Config, PipelineSpec, Store, RunOptions], RunReport]


def _on_workers(config: Config, spec: PipelineSpec, store: Store, options: RunOptions) -> RunReport:
    """``--workers celery``: the run's work goes to Celery workers (``distributed``)."""
    from distributed.coordinator import run_on_workers

    return run_on_workers(config, spec, store, options)


def _runner(workers: str) -> Runner:
    return _on_workers if workers == "celery" else run_pipeline


def _run_leased(
    config: Config,
    spec: PipelineSpec,
    store: Store,
    options: RunOptions,
    wait: float | None,
    runner: Runner = run_pipeline,
) -> RunReport:
    """Runs ``spec`` once its lease is free. While another process (``serve``, another
    command) runs it: fails naming the holder, or with ``wait`` (seconds) waits for it,
    saying so once, and fails naming the holder if it still runs after ``wait``."""
    deadline = None if wait is None else time.monotonic() + wait
    told = False
    while True:
        try:
            return runner(config, spec, store, options)
        except PipelineBusy:
            held = store.lease_holder(f"pipeline:{spec.name}")
            who = f"{held[0]}, its lease runs to {held[1]:%H:%M:%S} UTC" if held else "ending"
            if deadline is None:
                raise PipelineBusy(
                    f"pipeline {spec.name!r} is already running in another process ({who}); "
                    "--wait waits for it to end"
                ) from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise PipelineBusy(
                    f"pipeline {spec.name!r} is still running in another process ({who}) "
                    f"after waiting {wait:.0f}s (--wait-timeout)"
                ) from None
            if not told:
                click.echo(
                    f"waiting for pipeline {spec.name!r}: running in another process ({who})",
                    err=True,
                )
                told = True
            time.sleep(min(WAIT_POLL, left))


def r_json(report: RunReport) -> dict[str, Any]:
    return {
        "pipeline": report.pipeline,
        "run_id": report.run_id,
        "kind": report.kind,
        "dry_run": report.dry_run,
        "as_of": report.as_of.isoformat(),
        "status": report.status,
        **report.counts(),
        # per reason: its count, what it means, what to do and the first records
        "not_synced": report.not_synced.as_dict() if report.not_synced else None,
        "samples": {n: d.samples for n, d in report.destinations.items()},
        "errors": {n: d.error for n, d in report.destinations.items() if d.error},
    }


as_of_option = click.option("--as-of", help="compute profiles as of this ISO time (reproducible)")
pipeline_option = click.option(
    "--pipeline", help="only this pipeline (default: all); in a directory also STORE.PIPELINE"
)


@main.command()
@config_option
@store_option
@pipeline_option
@as_of_option
@click.option("--no-pull", is_flag=True, help="use staged data as it is; read no source")
@click.option("--samples", default=5, show_default=True, help="diff samples per destination")
@click.option(
    "--not-synced",
    "not_synced",
    default=10,
    show_default=True,
    help="records named per reason they would not be synced",
)
@click.option(
    "--person",
    metavar="EMAIL",
    help="only this person: profile, segments and the payload per destination (staged data)",
)
@json_option
def plan(
    config_path: str,
    store_name: str | None,
    pipeline: str | None,
    as_of: str | None,
    no_pull: bool,
    samples: int,
    not_synced: int,
    person: str | None,
    as_json: bool,
) -> None:
    """Dry run: what a run would create, update and move between groups; sends and records nothing.

    Sources are read into staging (the local copy of the store) unless --no-pull; nothing
    is sent to a destination and the ledger is not touched. Records that would not be
    synced are counted per reason and the first of each named, with what to do.

    With --person EMAIL: that one person as the next run would see them, from the data
    staged by the last run or plan (no source is read): profile, segments, and per
    destination the decision and the exact payload (fields, memberships, consent); for a
    pipeline with events on, the person's events the next run would send, with their keys
    and times.

    For a pipeline with events on, a plan also counts the events a run would send each
    destination, per kind (nothing is sent, and the event ledger is not touched).
    """
    if person is not None:
        when = _parse_time(as_of, "--as-of")
        _plan_person(config_path, store_name, pipeline, person, when, as_json)
        return
    options = RunOptions(
        kind="manual",
        dry_run=True,
        pull=not no_pull,
        samples=samples,
        not_synced=not_synced,
        as_of=_parse_time(as_of, "--as-of"),
    )
    _run(config_path, pipeline, options, as_json, store_name)


def _plan_person(
    config_path: str,
    store_name: str | None,
    pipeline: str | None,
    email: str,
    as_of: datetime | None,
    as_json: bool,
) -> None:
    from crmsync.errors import RecordError
    from engine.person_plan import person_key, plan_person, render_person

    try:
        key = person_key(email)
    except (RecordError, ValueError) as exc:
        raise click.BadParameter(
            f"{email!r} is not an e-mail address: {exc}", param_hint="--person"
        ) from None
    now = datetime.now(UTC)
    with _errors():
        chosen = select(config_path, store_name, pipeline)
        _broken(chosen)
        found = []
        for target in chosen.targets:
            store = Store(target.config.state_url, read_only=True)
            try:
                for spec in target.pipelines:
                    events = _person_events(target.config, spec, store, key, as_of or now)
                    with store.engine.connect() as conn:
                        found.append(plan_person(conn, spec, key, as_of or now, now, events))
            finally:
                store.close()
        people = [p for p in found if p is not None]
        if not people:
            _fail(
                EXIT_CONFIG,
                f"no person with the e-mail {key[2:]} in the staged data of "
                + ", ".join(s.name for _, s in chosen.pairs)
                + " (`crmsync plan` or `crmsync run` reads the sources into it)",
            )
        if as_json:  # times as ISO 8601, as destinations get them
            click.echo(json.dumps(people, indent=2, default=_iso))
        else:
            click.echo("\n\n".join(render_person(p) for p in people))


def _person_events(
    config: Config, spec: PipelineSpec, store: Store, key: str, as_of: datetime
) -> dict[str, dict[str, Any]] | None:
    """The person's pending events per destination, for a pipeline with events on
    (each destination is opened to learn the kinds it takes and their names; nothing is
    sent)."""
    if not spec.settings.events:
        return None
    from engine.plan_events import person_events

    with ExitStack() as stack:
        destinations: dict[str, object] = {}
        for dest in spec.destinations:
            instance = dest.cls(dest.config, context_for(config, dest.name))
            stack.callback(instance.close)
            destinations[dest.name] = instance
        return person_events(store, spec, destinations, as_of, key)


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


@main.command()
@config_option
@store_option
@pipeline_option
@as_of_option
@click.option("--progress/--no-progress", default=True, help="progress on a terminal")
@json_option
@wait_option
@wait_timeout_option
@workers_option
@job_wait_option
def run(
    config_path: str,
    store_name: str | None,
    pipeline: str | None,
    as_of: str | None,
    progress: bool,
    as_json: bool,
    wait: bool,
    wait_timeout: float,
    workers: str,
    job_wait: float,
) -> None:
    """Run pipelines once: pull, merge, segment and push what changed."""
    options = RunOptions(
        kind="manual",
        as_of=_parse_time(as_of, "--as-of"),
        progress=_progress(progress),
        job_wait_seconds=job_wait,
    )
    wait_for = wait_timeout if wait else None
    _run(config_path, pipeline, options, as_json, store_name, wait_for, _runner(workers))


@main.command()
@config_option
@store_option
@click.option("--pipeline", required=True, help="the pipeline to backfill")
@click.option("--since", help="re-pull and re-push what changed since this date")
@click.option("--full", is_flag=True, help="re-pull everything and re-push everyone")
@click.option(
    "--events",
    is_flag=True,
    help="also send the events of orders placed since --since not sent yet, as historical",
)
@as_of_option
@click.option("--progress/--no-progress", default=True, help="progress on a terminal")
@json_option
@wait_option
@wait_timeout_option
@workers_option
@job_wait_option
def backfill(
    config_path: str,
    store_name: str | None,
    pipeline: str,
    since: str | None,
    full: bool,
    events: bool,
    as_of: str | None,
    progress: bool,
    as_json: bool,
    wait: bool,
    wait_timeout: float,
    workers: str,
    job_wait: float,
) -> None:
    """Re-pull and re-push; an interrupted backfill resumes where it stopped.

    While ``serve`` (or another command) runs the pipeline, it fails naming the holder
    (exit 4), or with --wait waits for that run to end (never running beside it)."""
    if bool(since) == full:
        raise click.UsageError("give exactly one of --since DATE or --full")
    if events and not since:
        raise click.UsageError("--events needs --since DATE")
    options = RunOptions(
        kind="backfill",
        full=full,
        events=events,
        since=_parse_time(since, "--since"),
        as_of=_parse_time(as_of, "--as-of"),
        progress=_progress(progress),
        job_wait_seconds=job_wait,
    )
    wait_for = wait_timeout if wait else None
    _run(config_path, pipeline, options, as_json, store_name, wait_for, _runner(workers))


@main.command()
@config_option
@store_option
@pipeline_option
@click.option("--limit", default=10, show_default=True, help="rows per section, records per reason")
@json_option
def status(
    config_path: str, store_name: str | None, pipeline: str | None, limit: int, as_json: bool
) -> None:
    """Last runs, cursors, failures, quarantined records, the records the last run did not
    sync (counted per reason, the first of each named, with what to do) and consent
    read-back."""
    with _errors():
        chosen = select(config_path, store_name, pipeline)
        data = []
        for target in chosen.targets:
            store = Store(target.config.state_url, read_only=True)  # never creates nor migrates
            try:
                data += [status_data(store, spec, limit) for spec in target.pipelines]
            finally:
                store.close()
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        else:
            click.echo("\n\n".join(render_status(d) for d in data))
        if _broken(chosen):
            sys.exit(EXIT_CONFIG)


@main.command()
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: text on a terminal, JSON lines otherwise",
)
@workers_option
@click.pass_context
def serve(ctx: click.Context, config_path: str, log_format: str, workers: str) -> None:
    """Run the pipelines on their schedules as a service, until SIGTERM or Ctrl-C (runs
    under way stop after the batch in flight); SIGHUP reloads the configuration.

    With --workers celery, each run's work goes to the Celery workers (`crmsync worker`)
    and this process coordinates the runs: their schedules, leases, reports and alerts."""
    import scheduler
    from service import logs

    verbose = int(ctx.find_root().params.get("verbose") or 0)
    logs.configure(None if log_format == "auto" else log_format == "json", verbose)
    with _errors():
        if workers == "celery":
            _require_workers(config_path)
        code = scheduler.serve(config_path, run=_runner(workers))
    sys.exit(code)


def _require_workers(config_path: str) -> None:
    """Refuses to serve on workers before any schedule starts when a store that loads
    cannot run there (no broker, SQLite state): the key to set, not a failed run later."""
    from distributed.app import require_workers

    for config in select(config_path).configs:
        require_workers(config)


@main.command()
@config_option
@store_option
@click.option(
    "--concurrency", type=click.IntRange(min=1), help="tasks at once (default: one per core)"
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
    help="prefork: a process per task at once; solo: the tasks in this process",
)
@click.option("--loglevel", default="INFO", show_default=True, help="Celery's log level")
def worker(
    config_path: str, store_name: str | None, concurrency: int | None, pool: str, loglevel: str
) -> None:
    """Take tasks of `run --workers celery` from the [celery] broker until SIGTERM (the
    tasks under way end first). Every worker reads the configuration at the same path."""
    from distributed.app import require_workers, start_worker

    with _errors():
        chosen = select(config_path, store_name)
        if _broken(chosen) and not chosen.configs:
            _fail(EXIT_CONFIG, "no store's configuration loads: no worker started")
        settings = require_workers(chosen.configs[0])
        start_worker(settings, concurrency=concurrency, pool=pool, loglevel=loglevel)


@main.command()
@config_option
def migrate(config_path: str) -> None:
    """Bring the state database to the newest schema (runs also do this themselves)."""
    from state.migrate import upgrade

    with _errors():
        chosen = select(config_path)  # the stores of a directory share one
        _broken(chosen)
        for url in dict.fromkeys(config.state_url for config in chosen.configs):
            store = Store(url, migrate=False)
            try:
                before, after = upgrade(store.engine)
            finally:
                store.close()
            click.echo(f"state database at revision {after} (was {before or 'empty'})")


@main.command()
@config_option
@store_option
@click.option("--pipeline", required=True, help="whose consent events to export")
@click.option("--since", help="only events after this ISO time")
@click.option("--output", type=click.Path(dir_okay=False), help="file (default stdout)")
def consent(
    config_path: str, store_name: str | None, pipeline: str, since: str | None, output: str | None
) -> None:
    """Export opt-outs seen in destinations (CSV), for the platform to apply."""
    from engine.report import export_consent

    with _errors():
        pairs = select(config_path, store_name, pipeline).pairs
        if len(pairs) != 1:
            raise ConfigError(
                f"{len(pairs)} stores have a pipeline {pipeline!r}",
                key="--pipeline",
                hint="name one store with --store, or the pipeline as STORE.PIPELINE",
            )
        config, spec = pairs[0]
        store = Store(config.state_url)
        try:
            with ExitStack() as stack:
                handle = (
                    stack.enter_context(open(output, "w", encoding="utf-8", newline=""))
                    if output
                    else sys.stdout
                )
                count = export_consent(store, spec, _parse_time(since, "--since"), handle)
        finally:
            store.close()
        click.echo(f"exported {count} consent event(s)", err=True)


@main.command()
@click.option("--windows", default="30,90,365", show_default=True, help="spend windows in days")
def fields(windows: str) -> None:
    """List the profile fields that segment rules and mapping files may use."""
    from crmsync.fields import catalogue

    days: list[int] = []
    for part in windows.split(","):
        text = part.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise click.BadParameter(
                f"{text!r} is not a whole number of days; give e.g. 30,90,365",
                param_hint="--windows",
            )
        days.append(int(text))
    for f in catalogue(days).values():
        click.echo(f"{f.name:<24} {f.type:<9} {f.description}")


@main.command()
@click.option(
    "--customers", default=2000, show_default=True, type=click.IntRange(min=0), help="how many"
)
@click.option(
    "--orders-per-customer",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="average orders",
)
@click.option("--seed", default=7, show_default=True, help="random seed")
@click.option(
    "--now",
    "now_text",
    default="2026-11-01T12:00:00+03:00",
    show_default=True,
    help="the store's 'now' (times are relative to it)",
)
@click.option(
    "--dirty-rate",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="share of dirty records",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
def sample(
    customers: int,
    orders_per_customer: float,
    seed: int,
    now_text: str,
    dirty_rate: float,
    out_dir: str,
) -> None:
    """Generate a realistic, deterministic Turkish store as export files.

    The defaults reproduce the bundled sample_data/ exactly.
    """
    from crmsync.sample import SampleSpec, write_files

    now = _parse_time(now_text, "--now")
    assert now is not None
    spec = SampleSpec(
        customers=customers,
        seed=seed,
        now=now,
        orders_per_customer=orders_per_customer,
        dirty_rate=dirty_rate,
    )
    with _errors():
        written = write_files(spec, Path(out_dir))
    for stream, path in written.items():
        click.echo(f"{stream}: {path}")


@main.command()
@config_option
@store_option
@pipeline_option
@as_of_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="write the report, with charts, as one self-contained HTML file",
)
@click.option(
    "--limit",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="people named at risk and lapsed (each)",
)
@json_option
def report(
    config_path: str,
    store_name: str | None,
    pipeline: str | None,
    as_of: str | None,
    html_path: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Segment report: people, revenue, order value, what they buy and who joined or left
    per segment; the RFM grid; the most valuable people at risk and lapsed. Reads only
    the state database, and changes nothing."""
    from engine.reports import segment_report
    from engine.reports.html import render_html
    from engine.reports.terminal import render_terminal
    from state.report_reads import ReportReader

    with _errors():
        chosen = select(config_path, store_name, pipeline)
        _broken(chosen)
        when = _parse_time(as_of, "--as-of")
        reports = []
        for target in chosen.targets:
            segments = target.config.settings.segments
            notes = {name: s.description for name, s in segments.items()}
            store = Store(target.config.state_url, read_only=True)
            try:
                with ReportReader(store.engine) as reader:
                    reports += [
                        segment_report(spec, reader, when, descriptions=notes, people=limit)
                        for spec in target.pipelines
                    ]
            finally:
                store.close()
    if html_path:
        try:
            Path(html_path).write_text(render_html(reports), encoding="utf-8")
        except OSError as exc:
            raise click.FileError(html_path, hint=exc.strerror or str(exc)) from None
        click.echo(f"report written to {html_path}", err=True)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    elif not html_path:
        from rich.console import Console

        console = Console(width=None if sys.stdout.isatty() else 120, highlight=False)
        for one in reports:
            render_terminal(one, console)


@main.command()
@click.option("--source", default="files", show_default=True, help="the source kind")
@click.option("--destination", default="outbox", show_default=True, help="the destination kind")
@click.option(
    "--dir",
    "directory",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="where to write crmsync.toml and mappings/",
)
def init(source: str, destination: str, directory: str) -> None:
    """Write a commented starting crmsync.toml and the destination's mapping file.

    Source kinds: files, rest, sql; destination kinds: outbox, mailchimp, klaviyo,
    hubspot (and any a plugin registers). Existing files are never overwritten.
    """
    from crmsync.init_templates import starter

    with _errors():
        files = starter(source, destination)
        target = Path(directory)
        existing = files.existing(target)
        if existing:
            _fail(
                EXIT_CONFIG,
                "not overwriting "
                + ", ".join(str(p) for p in existing)
                + ": move them away or give another --dir",
            )
        for path in files.write(target):
            click.echo(f"wrote {path}")
        config = target / "crmsync.toml"
        if source == "files":
            click.echo(f"to try it on a generated store: `crmsync sample --out {target / 'data'}`")
        click.echo(f"next: edit {config}, then `crmsync check --config {config}`")


__all__ = ["main"]
