"""When ``serve`` runs each pipeline: cron and interval schedules in the pipeline's time
zone (DST included), missed runs coalesced, late ones skipped, a slow run never piling up
the ones it overlaps, and a restart or a reload that neither loses nor doubles a run.

Nothing here waits for a real schedule: triggers are asked for their fire times, and the
service's APScheduler is driven by hand (``Manual``) on a fake clock, with a stub runner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers import base as scheduler_base
from apscheduler.schedulers.base import BaseScheduler

from crmsync.config import Config, PipelineSpec
from crmsync.errors import ConfigError
from engine.resolve import load_config
from service.daemon import JOBS_TABLE, Service
from service.events import Event, NextRun, RunSkipped, StoreBroken
from service.schedules import plans
from tests.e2e import Site, make_site


def _site(tmp_path: Path, keys: str) -> Site:
    site = make_site(tmp_path, f"sqlite:///{tmp_path / 'state.db'}", customers=10)
    _set_schedule(site, keys)
    return site


def _set_schedule(site: Site, keys: str) -> None:
    text = site.config.read_text(encoding="utf-8")
    head, _, _ = text.partition('destinations = ["out"]\n')
    site.config.write_text(f'{head}destinations = ["out"]\n{keys}\n', encoding="utf-8")


def _fires(config: Config, start: datetime, count: int) -> list[str]:
    """The next ``count`` fire times of the config's only schedule, in UTC."""
    (plan,) = plans("", config)
    out, previous, now = [], None, start
    for _ in range(count):
        found = plan.trigger.get_next_fire_time(previous, now)
        out.append(found.astimezone(UTC).strftime("%a %m-%d %H:%M"))
        previous = now = found
    return out


# -- triggers ---------------------------------------------------------------------------


def test_a_cron_schedule_keeps_its_wall_clock_time_across_the_dst_change(tmp_path: Path) -> None:
    site = _site(tmp_path, 'schedule = "0 9 * * *"\ntimezone = "Europe/Berlin"')
    config = load_config(site.config)
    # Berlin moves to summer time on Sunday 29 March 2026: 09:00 is 08:00 UTC, then 07:00
    assert _fires(config, datetime(2026, 3, 27, 12, tzinfo=UTC), 4) == [
        "Sat 03-28 08:00",
        "Sun 03-29 07:00",
        "Mon 03-30 07:00",
        "Tue 03-31 07:00",
    ]
    _set_schedule(site, 'schedule = "0 9 * * *"\ntimezone = "America/New_York"')
    # New York on Sunday 8 March 2026: 09:00 is 14:00 UTC, then 13:00
    assert _fires(load_config(site.config), datetime(2026, 3, 6, 15, tzinfo=UTC), 3) == [
        "Sat 03-07 14:00",
        "Sun 03-08 13:00",
        "Mon 03-09 13:00",
    ]


def test_a_schedule_without_a_zone_runs_in_the_configured_one(tmp_path: Path) -> None:
    site = _site(tmp_path, 'schedule = "0 9 * * *"')
    config = load_config(site.config)
    assert config.settings.defaults.timezone == "Europe/Istanbul"  # UTC+3, no DST
    assert _fires(config, datetime(2026, 3, 28, 12, tzinfo=UTC), 3) == [
        "Sun 03-29 06:00",
        "Mon 03-30 06:00",
        "Tue 03-31 06:00",
    ]


def test_the_hour_the_autumn_change_repeats_runs_a_daily_schedule_once(tmp_path: Path) -> None:
    site = _site(tmp_path, 'schedule = "30 2 * * *"\ntimezone = "Europe/Berlin"')
    # 02:30 happens twice on 25 October 2026 (00:30 and 01:30 UTC): one run
    assert _fires(load_config(site.config), datetime(2026, 10, 23, 12, tzinfo=UTC), 3) == [
        "Sat 10-24 00:30",
        "Sun 10-25 00:30",
        "Mon 10-26 01:30",
    ]
    _set_schedule(site, 'schedule = "0 * * * *"\ntimezone = "Europe/Berlin"')
    # hourly: both 02:00s run, an hour apart, as every other hour does
    assert _fires(load_config(site.config), datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4) == [
        "Sun 10-25 00:00",
        "Sun 10-25 01:00",
        "Sun 10-25 02:00",
        "Sun 10-25 03:00",
    ]


def test_days_of_the_week_mean_what_they_mean_in_cron(tmp_path: Path) -> None:
    site = _site(tmp_path, 'schedule = "0 9 * * 1-5"\ntimezone = "UTC"')
    days = [d[:3] for d in _fires(load_config(site.config), datetime(2026, 3, 1, tzinfo=UTC), 6)]
    assert days == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]
    for sunday in ("0", "7", "sun"):
        _set_schedule(site, f'schedule = "0 9 * * {sunday}"\ntimezone = "UTC"')
        found = _fires(load_config(site.config), datetime(2026, 3, 2, tzinfo=UTC), 2)
        assert found == ["Sun 03-08 09:00", "Sun 03-15 09:00"], sunday


def test_an_interval_counts_from_the_start(tmp_path: Path) -> None:
    site = _site(tmp_path, 'every = "1h30m"\ntimezone = "Europe/Berlin"')
    (plan,) = plans("", load_config(site.config))
    first = plan.trigger.get_next_fire_time(None, datetime.now(UTC))
    second = plan.trigger.get_next_fire_time(first, first)
    assert second - first == timedelta(hours=1, minutes=30)


@pytest.mark.parametrize(
    ("keys", "key", "says"),
    [
        ('schedule = "*/5 * * * *"\nevery = "5m"', "pipelines.main", "not both"),
        ('every = "5 minutes"', "pipelines.main.every", "not an interval"),
        ('every = "0m"', "pipelines.main.every", "no time at all"),
        ('schedule = "0 9 * * 8"', "pipelines.main.schedule", "day of week"),
        ('timezone = "Mars/Olympus"', "pipelines.main.timezone", "unknown time zone"),
    ],
)
def test_a_bad_schedule_is_refused_under_its_key(
    tmp_path: Path, keys: str, key: str, says: str
) -> None:
    site = _site(tmp_path, keys)
    with pytest.raises(ConfigError) as caught:
        load_config(site.config)
    assert any(i.key == key and says in i.message for i in caught.value.issues), str(caught.value)


# -- the service on a fake clock --------------------------------------------------------


class Manual(BaseScheduler):  # type: ignore[misc]
    """APScheduler with no thread of its own: the test calls ``_process_jobs``."""

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)

    def wakeup(self) -> None:
        return None


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class StubRunner:
    """Records the runs the service starts; with ``gate`` set, a run lasts until it opens."""

    runs: list[tuple[str, datetime | None]] = field(default_factory=list)
    gate: threading.Event | None = None

    def run(self, store: str, config: Config, spec: PipelineSpec, **kw: Any) -> None:
        self.runs.append((spec.name, kw.get("tick")))
        if self.gate is not None:
            assert self.gate.wait(10)

    def wait(self, timeout: float) -> bool:
        return True


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)

    def notify(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    found = Clock(datetime(2026, 3, 2, 10, 1, tzinfo=UTC))  # T0 + 1 minute

    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return found.now.astimezone(tz)

    monkeypatch.setattr(scheduler_base, "datetime", FakeDatetime)
    return found


class Harness:
    def __init__(self, site: Site, clock: Clock) -> None:
        self.site, self.clock = site, clock
        self.runner, self.seen = StubRunner(), Recorder()
        self.service = Service(
            site.config,
            self.seen,
            scheduler=Manual(timezone=UTC),
            clock=clock,
            runner=self.runner,  # type: ignore[arg-type]
        )

    def at(self, when: datetime) -> None:
        """The clock shows ``when``: whatever is due is handed over and has ended (unless
        the runner's gate holds it)."""
        self.clock.now = when
        self.service.scheduler._process_jobs()
        executor = self.service.scheduler._lookup_executor("runs")
        deadline = time.monotonic() + 10
        gated = self.runner.gate is not None and not self.runner.gate.is_set()
        while not gated and any(executor._instances.values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def next_run(self) -> datetime:
        (job,) = self.service.scheduler.get_jobs()
        at: datetime = job.next_run_time
        return at.astimezone(UTC)

    def stop(self) -> None:
        if self.runner.gate is not None:
            self.runner.gate.set()
        self.service.stop("test over", 0)


@pytest.fixture
def harnesses(tmp_path: Path, clock: Clock) -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for each in made:
        each.stop()


def _start(site: Site, clock: Clock, made: list[Harness]) -> Harness:
    harness = Harness(site, clock)
    made.append(harness)
    harness.service.start()
    return harness


T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def test_runs_fire_on_schedule_each_with_its_time_and_the_next_one_is_told(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    site = _site(tmp_path, 'schedule = "*/15 * * * *"\ntimezone = "UTC"')
    h = _start(site, clock, harnesses)
    assert h.next_run() == T0 + timedelta(minutes=15)
    assert [e.at for e in h.seen.of(NextRun)] == [T0 + timedelta(minutes=15)]
    h.at(T0 + timedelta(minutes=14, seconds=59))
    assert h.runner.runs == []
    for minutes in (15, 30, 45):
        h.at(T0 + timedelta(minutes=minutes, seconds=2))
    assert h.runner.runs == [("main", T0 + timedelta(minutes=m)) for m in (15, 30, 45)]
    assert h.next_run() == T0 + timedelta(hours=1)
    assert h.seen.of(NextRun)[-1].at == T0 + timedelta(hours=1)


def test_a_slow_run_does_not_pile_up_the_runs_it_overlaps(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    site = _site(tmp_path, 'schedule = "*/15 * * * *"\ntimezone = "UTC"')
    h = _start(site, clock, harnesses)
    h.runner.gate = threading.Event()
    h.at(T0 + timedelta(minutes=15))  # starts, and lasts
    for minutes in (30, 45, 60):
        h.at(T0 + timedelta(minutes=minutes))
    skipped = h.seen.of(RunSkipped)
    assert [s.reason for s in skipped] == ["the previous run is still going"] * 3
    h.runner.gate.set()
    h.runner.gate = None
    h.at(T0 + timedelta(minutes=61))  # nothing was kept for later
    assert h.runner.runs == [("main", T0 + timedelta(minutes=15))]
    h.at(T0 + timedelta(minutes=75))
    assert h.runner.runs[-1] == ("main", T0 + timedelta(minutes=75))
    assert len(h.runner.runs) == 2


def test_a_restart_runs_the_missed_time_once_and_never_a_time_already_run(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    site = _site(tmp_path, 'schedule = "*/15 * * * *"\ntimezone = "UTC"')
    first = _start(site, clock, harnesses)
    first.at(T0 + timedelta(minutes=15))
    first.stop()
    # the same instant, a new process: the 10:15 run happened, nothing runs again
    again = _start(site, clock, harnesses)
    again.at(T0 + timedelta(minutes=15, seconds=1))
    assert again.runner.runs == []
    assert again.next_run() == T0 + timedelta(minutes=30)
    again.stop()
    # down from 10:15 to 11:02: 10:30, 10:45 and 11:00 were missed; one run, for 11:00
    later = _start(site, clock, [])
    harnesses.append(later)
    later.at(T0 + timedelta(hours=1, minutes=2))
    assert later.runner.runs == [("main", T0 + timedelta(hours=1))]
    assert later.next_run() == T0 + timedelta(hours=1, minutes=15)


def test_a_run_missed_by_more_than_the_grace_is_skipped_and_the_next_runs_on_time(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    keys = 'schedule = "*/15 * * * *"\ntimezone = "UTC"'
    site = _site(tmp_path, keys)
    first = _start(site, clock, harnesses)
    first.stop()
    text = site.config.read_text(encoding="utf-8")
    site.config.write_text(f"{text}\n[serve]\nmisfire_grace_seconds = 60\n", encoding="utf-8")
    late = _start(site, clock, harnesses)
    late.at(T0 + timedelta(minutes=17))  # 10:15 is two minutes late
    assert late.runner.runs == []
    (skipped,) = late.seen.of(RunSkipped)
    assert "missed by 120s" in skipped.reason and "misfire_grace_seconds (60)" in skipped.reason
    late.at(T0 + timedelta(minutes=30, seconds=5))
    assert late.runner.runs == [("main", T0 + timedelta(minutes=30))]


def test_a_broken_reload_keeps_the_schedule_and_a_changed_one_replaces_it(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    site = _site(tmp_path, 'schedule = "*/15 * * * *"\ntimezone = "UTC"')
    h = _start(site, clock, harnesses)
    good = site.config.read_text(encoding="utf-8")
    site.config.write_text(good + "\nnonsense = 1\n", encoding="utf-8")
    assert h.service.reload() is False
    (broken,) = h.seen.of(StoreBroken)
    assert broken.kept_previous and any("nonsense" in i for i in broken.issues)
    assert h.next_run() == T0 + timedelta(minutes=15)  # kept, with its next run time
    h.at(T0 + timedelta(minutes=15))
    assert h.runner.runs == [("main", T0 + timedelta(minutes=15))]  # with the old config
    # a schedule that changes is rescheduled; one that does not keeps its time
    site.config.write_text(good.replace("*/15 * * * *", "0 * * * *"), encoding="utf-8")
    assert h.service.reload() is True
    assert h.next_run() == T0 + timedelta(hours=1)
    assert h.service.reload() is True
    assert h.next_run() == T0 + timedelta(hours=1)


def test_the_schedules_are_kept_in_the_state_database(
    tmp_path: Path, clock: Clock, harnesses: list[Harness]
) -> None:
    import sqlalchemy as sa

    site = _site(tmp_path, 'schedule = "*/15 * * * *"\ntimezone = "UTC"')
    _start(site, clock, harnesses)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, next_run_time FROM {JOBS_TABLE}")).all()
    engine.dispose()
    assert rows == [("crmsync::main", (T0 + timedelta(minutes=15)).timestamp())]
