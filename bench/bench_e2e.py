"""End to end, as a user runs it: files -> state database -> profiles -> the fake Mailchimp.

    python -m bench.bench_e2e [--sizes 10000,100000] [--engines sqlite,postgresql]
                              [--latency 0.08] [--connections 10] [--keep]
                              [--work var/bench] [--source DIR]

For each size and engine, ``crmsync run --config X --as-of T --json`` runs as a subprocess
three times against the fake Mailchimp (real HTTP on 127.0.0.1, ``latency`` seconds per
call, at most ``connections`` requests in flight, spec validation off for speed): the
first sync, a run with nothing changed, and a run after 1 % of the customers changed in
the export files (half of them renamed and moved to another city, half with a new order,
all stamped after the first run's data). Every run uses the same ``--as-of`` (an hour
after the store's clock), so profiles never drift with the calendar and the third run
changes exactly the people edited.

Per run it writes the wall time, the run report's seconds per stage, the staging rate
(records received / ``pull.stage`` seconds; ``pull_records_per_s`` divides by reading
plus staging), the CPU of the run's process tree, the peak RSS of its processes (the
maximum over the tree from /usr/bin/time; per process sampled from ``/proc``), the CPU
this process spent meanwhile (mostly the fake), on PostgreSQL the server's CPU for the
run's database (sampled), and the Mailchimp calls by kind against the floor.

The floor is computed from what the fake's audience shows changed: ⌈members
upserted/500⌉ plus, per tag, max(⌈adds/500⌉, ⌈removes/500⌉) membership calls, where a tag
created in the run carries its first 500 members, plus one call per archived member;
tag creation, merge-field set-up and reads are one-time calls reported apart.
The time floor is floor calls × latency / connections. At 10,000 customers the same
audience is also pushed per contact (one member PUT and one tags POST per person, with
httpx at the same connection cap) for the ratio of calls and time.

Sample stores (5 orders a customer, 1 % dirty rows, seed 7) are generated once per size
and cached under ``var/bench/stores`` (a million customers takes minutes); each run works
on a copy in ``var/bench/e2e`` (``--keep`` keeps it, with each run's JSON and log).
``--source DIR`` runs crmsync from another tree, e.g. ``git archive <commit> | tar -x -C
DIR``, for a before/after on the same stores. A PostgreSQL run uses a database of its
own (``CREATE DATABASE``, dropped afterwards) on the server of
``CRMSYNC_TEST_POSTGRES_URL`` (default 127.0.0.1:5432). Figures go to the results file
(``bench/results.py``) under "e2e", merged with earlier sizes, keyed
``<engine>.<size>.<run>.<figure>``; the targets sit beside them as met/missed, never
asserted. At a million customers the fake holds the whole audience in
this process: expect a few GB here, which is not crmsync's memory.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import results
from bench.results import Figure

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp

ROOT = Path(__file__).resolve().parent.parent
SEED, ORDERS_PER_CUSTOMER, DIRTY_RATE = 7, 5.0, 0.01
RUNS = ("first", "no_change", "changed")
ENGINES = ("sqlite", "postgresql")
BATCH = 500  # Mailchimp's members per call
KEY_ENV = "CRMSYNC_BENCH_MAILCHIMP_KEY"
POSTGRES_URL = os.environ.get(
    "CRMSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CALL_NAMES = {
    ("POST", "/lists/{list_id}"): "upsert",
    ("POST", "/lists/{list_id}/segments/{segment_id}"): "tag_batch",
    ("POST", "/lists/{list_id}/segments"): "tag_create",
    ("POST", "/lists/{list_id}/merge-fields"): "merge_field_create",
    ("PATCH", "/lists/{list_id}/merge-fields/{merge_id}"): "merge_field_update",
    ("DELETE", "/lists/{list_id}/members/{subscriber_hash}"): "archive",
}
SYNC_CALLS = ("upsert", "tag_batch", "archive")
_EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$")


@dataclass(frozen=True)
class Options:
    latency: float = 0.08
    connections: int = 10
    work: Path = ROOT / "var" / "bench"
    per_contact_sizes: frozenset[int] = frozenset({10_000})
    keep: bool = False
    source: Path | None = None  # run crmsync from this tree (e.g. an older commit's archive)


# -- the store and its 1 % change ---------------------------------------------------------


def store_for(size: int, cache: Path) -> Path:
    """The export files of a ``size``-customer store, generated on first use only."""
    from crmsync.sample import SampleSpec, write_files

    folder = cache / f"c{size}-o{ORDERS_PER_CUSTOMER:g}-d{DIRTY_RATE:g}-s{SEED}"
    if not (folder / "customers.csv").exists():
        partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        spec = SampleSpec(
            customers=size, seed=SEED, orders_per_customer=ORDERS_PER_CUSTOMER,
            dirty_rate=DIRTY_RATE,
        )  # fmt: skip
        write_files(spec, partial)
        os.replace(partial, folder)  # whole or absent, for the next bench that looks
    return folder


def as_of() -> str:
    """One clock for every run: an hour after the store's, after the changed rows."""
    from crmsync.sample import DEFAULT_NOW

    return (DEFAULT_NOW + timedelta(hours=1)).isoformat()


def change_one_percent(data: Path) -> set[str]:
    """Edits 1 % of the customers in place, stamped half an hour after the store's clock:
    even picks get a new last name and city (city alone reaches no Mailchimp field: the
    address needs a street), odd picks a new order. Only clean customers with an address
    nobody else uses are picked, so each pick is one person. Returns their addresses.
    Two streaming passes over the CSV: a million rows are never held at once."""
    from crmsync.sample import DEFAULT_NOW

    changed_at = (DEFAULT_NOW + timedelta(minutes=30)).isoformat()
    path = data / "customers.csv"
    uses: Counter[str] = Counter()
    candidates: list[tuple[int, str]] = []
    clean = 0
    for number, row in _customer_rows(path):
        email = row["email"].strip().lower()
        uses[email] += 1
        if row["customer_id"].isdigit() and int(row["customer_id"]) < 900_000_000:
            clean += 1  # the generator's dirty rows have ids above 900,000,000
            if row["deleted"] == "false" and _EMAIL.match(email):
                candidates.append((number, email))
    eligible = [number for number, email in candidates if uses[email] == 1]
    wanted = min(max(1, round(clean / 100)), len(eligible))
    picks = {eligible[i * len(eligible) // wanted]: i for i in range(wanted)}
    emails: set[str] = set()
    partial = path.with_suffix(".csv.partial")
    with (
        path.open(encoding="utf-8", newline="") as source,
        partial.open("w", encoding="utf-8", newline="") as target,
        (data / "orders.jsonl").open("a", encoding="utf-8") as orders,
    ):
        reader, writer = csv.reader(source), csv.writer(target, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        at = {name: header.index(name) for name in header}
        for number, cells in enumerate(reader):
            turn = picks.get(number)
            if turn is not None:
                emails.add(cells[at["email"]].strip().lower())
                if turn % 2 == 0:
                    cells[at["last_name"]] = f"{cells[at['last_name']]} Yeni".strip()
                    cells[at["city"]] = "Ankara" if cells[at["city"]] != "Ankara" else "Eskişehir"
                    cells[at["updated_at"]] = changed_at
                else:
                    order = _new_order(800_000_001 + turn, cells, at, changed_at)
                    orders.write(json.dumps(order, ensure_ascii=False) + "\n")
            writer.writerow(cells)
    os.replace(partial, path)
    return emails


def _customer_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, row) of the customer export's well-formed rows."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for number, cells in enumerate(reader):
            if len(cells) == len(header):
                yield number, dict(zip(header, cells, strict=True))


def _new_order(number: int, row: list[str], at: dict[str, int], when: str) -> dict[str, Any]:
    line = {"sku": "AKS-0003", "title": "Deri Cüzdan Kırmızı", "category": "Aksesuar"}
    return {
        "id": str(number), "customer_id": row[at["customer_id"]],
        "email": row[at["email"]].strip().lower(), "created_at": when, "updated_at": when,
        "status": "paid", "currency": "TRY", "total_price": "349.90", "total_discount": "0.00",
        "total_refunded": "0.00",
        "line_items": [{**line, "quantity": 1, "price": "349.90", "discount": "0.00"}],
    }  # fmt: skip


# -- state database and configuration -----------------------------------------------------


@contextmanager
def state_database(engine: str, folder: Path, name: str) -> Iterator[str]:
    """A state URL of its own: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{folder / 'state.db'}"
        return
    import psycopg
    import sqlalchemy as sa

    admin = sa.make_url(POSTGRES_URL)
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _libpq(url: Any) -> str:
    return str(url.set(drivername="postgresql").render_as_string(hide_password=False))


def config_text(state_url: str, data: Path, fake: FakeMailchimp, connections: int) -> str:
    """The user's configuration (as in config.example.toml) with a Mailchimp destination."""
    return f"""default_segments = true

[state]
url = "{state_url}"

[defaults]
region = "TR"
timezone = "Europe/Istanbul"
currency = "TRY"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{data / "customers.csv"}"
updated_at = "updated_at"
[sources.shop.customers.columns]
external_id = "customer_id"
region = "district"
[sources.shop.orders]
path = "{data / "orders.jsonl"}"
updated_at = "updated_at"
lines = "line_items"
[sources.shop.orders.columns]
placed_at = "created_at"
total = "total_price"
[sources.shop.orders.line_columns]
product = "title"
unit_price = "price"
[sources.shop.carts]
path = "{data / "carts.jsonl"}"
updated_at = "updated_at"
[sources.shop.carts.columns]
converted = "completed_at"
checkout_url = "abandoned_checkout_url"

[destinations.mc]
kind = "mailchimp"
api_key = "${{{KEY_ENV}}}"
list_id = "{fake.list_id}"
base_url = "{fake.base_url}"
max_connections = {connections}

[pipelines.main]
sources = ["shop"]
destinations = ["mc"]
"""


# -- one crmsync run, watched ---------------------------------------------------------------


class Watcher(threading.Thread):
    """Samples the run's process tree (peak RSS per process) and, on PostgreSQL, the CPU of
    the server processes working for the run's database, until stopped."""

    def __init__(
        self, pid: int, database: str | None, launcher: bool = False, interval: float = 0.25
    ) -> None:
        super().__init__(daemon=True)
        self.pid, self.database, self.interval = pid, database, interval
        self.launcher = launcher  # ``pid`` only starts crmsync: its child is the main process
        self.peak_kb: dict[int, int] = {}
        self.parent: dict[int, int] = {}
        self.server_ticks: dict[int, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        conn = None
        if self.database is not None:
            import psycopg
            import sqlalchemy as sa

            conn = psycopg.connect(_libpq(sa.make_url(POSTGRES_URL)), autocommit=True)
        try:
            while not self._done.wait(self.interval):
                self._sample(conn)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def peaks(self) -> Peaks:
        """The sampled peaks (kB): crmsync's main process, the largest other, how many."""
        main = [p for p, parent in self.parent.items() if self.launcher and parent == self.pid]
        main_pid = main[0] if main else self.pid
        others = [kb for p, kb in self.peak_kb.items() if p not in (main_pid, self.pid)]
        return Peaks(self.peak_kb.get(main_pid, 0), max(others, default=0), 1 + len(others))

    def _sample(self, conn: Any) -> None:
        for pid, parent in _tree(self.pid):
            kb = _status_kb(pid, "VmHWM")
            if kb:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), kb)
                self.parent[pid] = parent
        if conn is not None:
            query = "select pid from pg_stat_activity where datname = %s"
            for (pid,) in conn.execute(query, (self.database,)).fetchall():
                ticks = _cpu_ticks(pid)
                if ticks is not None:
                    self.server_ticks[pid] = max(self.server_ticks.get(pid, 0), ticks)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, ..., utime (11), stime (12)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


@dataclass(frozen=True)
class Peaks:
    main: int
    others: int
    processes: int


def _tree(root: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [(root, 0)]
    while todo:
        pid, parent = todo.pop()
        found.append((pid, parent))
        todo.extend((child, pid) for child in children.get(pid, ()))
    return found


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cpu_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else None


@dataclass
class Run:
    """One ``crmsync run``: its report and what it cost; the calls are filled in after."""

    report: dict[str, Any]
    wall: float
    cpu_user: float
    cpu_system: float
    peak_rss_mb: float
    main_rss_mb: float
    others_rss_mb: float
    processes: int
    bench_cpu: float
    server_cpu: float | None
    calls: Counter[str] = field(default_factory=Counter)
    floor: int = 0
    max_in_flight: int = 0
    rejected_429: int = 0


TIME = Path("/usr/bin/time")  # GNU time: the launcher whose child is crmsync


def run_crmsync(config: Path, folder: Path, env: dict[str, str], database: str | None) -> Run:
    """``crmsync run`` as a subprocess; its report, wall time, CPU and memory.

    It is started by /usr/bin/time, not by this process: a child forked from here and its
    ``ru_maxrss`` would count this process's memory (the fake's audience) from before the
    exec. time's ``%M`` is the largest peak RSS over crmsync and every process it waited
    for, and ``%U``/``%S`` their CPU. Without /usr/bin/time the peak is the sampled one.
    """
    out, err, usage_file = folder / "run.json", folder / "run.log", folder / "rusage.txt"
    command = [str(Path(sys.executable).with_name("crmsync")), "run", "--config", str(config)]
    command += ["--as-of", as_of(), "--json", "--no-progress"]
    launcher = [str(TIME), "-f", "%M %U %S", "-o", str(usage_file)] if TIME.exists() else []
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # cwd: the run's folder, so no worker finds the checkout's code by its current
        # directory when --source names another tree
        process = subprocess.Popen(
            [*launcher, *command], stdout=stdout, stderr=stderr, env=env, cwd=folder
        )
        watcher = Watcher(process.pid, database, launcher=bool(launcher))
        watcher.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        watcher.stop()
    wall = time.perf_counter() - started
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    if process.returncode not in (0, 5):  # 5: partial, some records failed; still a run
        tail = err.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"crmsync run exited {process.returncode}:\n{tail}")
    report = json.loads(out.read_text(encoding="utf-8"))[0]
    peak_kb, user, system = 0, usage.ru_utime, usage.ru_stime
    if launcher:
        # the last line: time writes "Command exited with non-zero status" above it
        last = usage_file.read_text(encoding="utf-8").splitlines()[-1].split()
        peak_kb, user, system = int(last[0]), float(last[1]), float(last[2])
    sampled = watcher.peaks()
    return Run(
        report=report,
        wall=wall,
        cpu_user=user,
        cpu_system=system,
        peak_rss_mb=max(peak_kb, sampled.main, sampled.others) / 1024,
        main_rss_mb=sampled.main / 1024,
        others_rss_mb=sampled.others / 1024,
        processes=sampled.processes,
        bench_cpu=(self_after.ru_utime + self_after.ru_stime)
        - (self_before.ru_utime + self_before.ru_stime),
        server_cpu=(
            sum(watcher.server_ticks.values()) / os.sysconf("SC_CLK_TCK")
            if database is not None
            else None
        ),
    )


# -- the audience and the floor -------------------------------------------------------------


@dataclass(frozen=True)
class Audience:
    """What the fake holds: per member its status and merge fields (as one fingerprint),
    per tag its members."""

    members: dict[str, tuple[str, str]]
    tags: dict[str, frozenset[str]]

    @classmethod
    def of(cls, fake: FakeMailchimp) -> Audience:
        with fake._lock:
            audience = fake.audience
            members = {
                key: (m["status"], json.dumps(m["merge_fields"], sort_keys=True))
                for key, m in audience.members.items()
            }
            tags = {
                audience.segments[sid]["name"]: frozenset(ids)
                for sid, ids in audience.segment_members.items()
            }
        return cls(members, tags)


def floor_calls(before: Audience, after: Audience) -> int:
    """The fewest sync calls any client needs to take the fake from ``before`` to ``after``."""
    from connectors.kit import floor_calls as membership_floor

    upserts = archives = 0
    for key, (status, fields) in after.members.items():
        old = before.members.get(key)
        if old == (status, fields):
            continue
        if status == "archived":
            archives += 1  # one DELETE per person: Mailchimp has no batch archive
        else:
            upserts += 1
    adds = {t: len(m - before.tags.get(t, frozenset())) for t, m in after.tags.items()}
    removes = {t: len(before.tags.get(t, frozenset()) - m) for t, m in after.tags.items()}
    carried = {t: min(n, BATCH) for t, n in adds.items() if t not in before.tags}
    moves = membership_floor(
        {t: n for t, n in adds.items() if n},
        {t: n for t, n in removes.items() if n},
        BATCH,
        paired=True,
        carried=carried,
    )
    return math.ceil(upserts / BATCH) + moves + archives


def call_name(method: str, route: str) -> str:
    return CALL_NAMES.get((method, route)) or f"{method} {route}"


# -- the per-contact method ------------------------------------------------------------------


def per_contact(
    source: FakeMailchimp, options: Options, validate: bool = False
) -> dict[str, Figure]:
    """The audience ``source`` holds, pushed into a fresh fake one person at a time: a PUT
    of the member and a POST of every owned tag's state, ``connections`` at a time
    (``validate``: the fake checks each request against the spec, as in the tests)."""
    import httpx

    from tests.fakes.mailchimp import FakeMailchimp, subscriber_hash

    with source._lock:
        tagged = {tag: members for tag, members in source.tag_members().items() if members}
        names = sorted(tagged)
        people = [
            (m["email_address"], m["status"], dict(m["merge_fields"]))
            for m in source.audience.members.values()
            if m["status"] != "archived"
        ]
        fields = copy.deepcopy(source.audience.merge_fields)
    fake = FakeMailchimp(
        validate=validate, latency=options.latency, max_connections=options.connections
    ).start()
    fake.audience.merge_fields = fields  # set up as crmsync's were: not part of the race
    path = f"/lists/{fake.list_id}/members"
    client = httpx.Client(
        base_url=fake.base_url,
        auth=("bench", fake.api_key),
        limits=httpx.Limits(max_connections=options.connections),
        timeout=60,
    )

    def send(method: str, url: str, body: dict[str, Any]) -> None:
        for _ in range(20):  # a naive client's retry of 429
            response = client.request(method, url, json=body)
            if response.status_code != 429:
                response.raise_for_status()
                return
        raise RuntimeError(f"{method} {url}: still 429 after 20 tries")

    def push(person: tuple[str, str, dict[str, Any]]) -> None:
        email, status, merge_fields = person
        member = f"{path}/{subscriber_hash(email)}"
        body = {"email_address": email, "status_if_new": status, "merge_fields": merge_fields}
        send("PUT", member, body)
        states = [
            {"name": n, "status": "active" if email.lower() in tagged[n] else "inactive"}
            for n in names
        ]
        send("POST", f"{member}/tags", {"tags": states})

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(options.connections) as pool:
            list(pool.map(push, people))
        seconds = time.perf_counter() - started
        pushed = {m["email_address"]: m["merge_fields"] for m in fake.audience.members.values()}
        kept = {e: s for e, s in source.statuses().items() if s != "archived"}
        same = fake.statuses() == kept and fake.tag_members() == tagged  # no empty tags made
        same = same and all(pushed.get(email) == values for email, _, values in people)
    finally:
        client.close()
        fake.stop()
    return {
        "people": len(people),
        "calls": sum(fake.calls.values()),
        "seconds": round(seconds, 3),
        "rejected_429": fake.concurrency_rejections,
        "same_audience": "yes" if same else "NO",
        "spec_violations": len(fake.violations),
    }


# -- one size on one engine ------------------------------------------------------------------


def bench_one(
    size: int,
    engine: str,
    options: Options,
    fake: FakeMailchimp | None = None,
    contact: dict[str, Figure] | None = None,
) -> tuple[dict[str, Figure], dict[str, Figure] | None]:
    """The three runs of one store on one engine; returns its figures (keyed
    ``<engine>.<size>.…``) and the per-contact figures (measured here when ``contact`` is
    None and the size asks for them, else the ones given)."""
    from tests.fakes.mailchimp import FakeMailchimp

    store = store_for(size, options.work / "stores")
    folder = options.work / "e2e" / f"{engine}-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    data = folder / "data"
    data.mkdir(parents=True)
    for name in ("customers.csv", "orders.jsonl", "carts.jsonl"):
        shutil.copyfile(store / name, data / name)
    fake = fake or FakeMailchimp(
        validate=False, latency=options.latency, max_connections=options.connections
    )
    fake.start()
    env = {**os.environ, KEY_ENV: fake.api_key}
    if options.source is not None:  # ahead of the editable install, in workers too
        env["PYTHONPATH"] = str(options.source)
    database = f"bench_e2e_{size}_{os.getpid()}" if engine == "postgresql" else None
    runs: dict[str, Run] = {}
    changed: set[str] = set()
    try:
        with state_database(engine, folder, database or "") as url:
            config = folder / "crmsync.toml"
            config.write_text(config_text(url, data, fake, options.connections), "utf-8")
            for name in RUNS:
                if name == "changed":
                    changed = change_one_percent(data)
                before = Audience.of(fake)
                fake.reset_counters()
                run = run_crmsync(config, folder, env, database)
                run.calls = Counter({call_name(m, r): n for (m, r), n in fake.calls.items()})
                run.floor = floor_calls(before, Audience.of(fake))
                run.max_in_flight = fake.max_in_flight
                run.rejected_429 = fake.concurrency_rejections
                runs[name] = run
                print(f"  {engine} {size:,} {name}: {run.wall:.1f} s", flush=True)
        if contact is None and size in options.per_contact_sizes:
            contact = per_contact(fake, options)
    finally:
        fake.stop()
        if not options.keep:
            shutil.rmtree(folder, ignore_errors=True)
    figures = size_figures(size, engine, runs, changed, options, contact)
    return {f"{engine}.{size}.{k}": v for k, v in figures.items()}, contact


def size_figures(
    size: int,
    engine: str,
    runs: dict[str, Run],
    changed: set[str],
    options: Options,
    contact: dict[str, Figure] | None,
) -> dict[str, Figure]:
    figures: dict[str, Figure] = {"customers": size, "changed_people": len(changed)}
    for name, run in runs.items():
        figures.update({f"{name}.{k}": v for k, v in run_figures(run, options).items()})
    first = runs["first"].wall
    figures["no_change_over_first"] = round(runs["no_change"].wall / first, 4)
    figures["changed_over_first"] = round(runs["changed"].wall / first, 4)
    if contact is not None:
        figures.update({f"per_contact.{k}": v for k, v in contact.items()})
        calls = sum(runs["first"].calls.values())
        figures["per_contact.calls_over_crmsync"] = round(float(contact["calls"]) / calls, 2)
        figures["per_contact.seconds_over_crmsync"] = round(float(contact["seconds"]) / first, 2)
    figures.update({f"target.{k}": v for k, v in targets(size, engine, figures).items()})
    return figures


def run_figures(run: Run, options: Options) -> dict[str, Figure]:
    report = run.report
    seconds = dict(report.get("seconds") or {})
    received = sum(int(s.get("received", 0)) for s in report["pulled"].values())
    staged = sum(int(s.get("staged", 0)) for s in report["pulled"].values())
    stage_s = float(seconds.get("pull.stage", 0.0))
    pull_s = stage_s + float(seconds.get("pull.read", 0.0))
    people = Counter({k: int(v) for k, v in report["destinations"]["mc"].items()})
    sync = sum(run.calls[k] for k in SYNC_CALLS)
    time_floor = run.floor * options.latency / options.connections
    figures: dict[str, Figure] = {
        "run_id": report["run_id"],
        "status": report["status"],
        "wall_s": round(run.wall, 3),
        **{f"stage_s.{k}": v for k, v in seconds.items()},
        "received": received,
        "staged": staged,
        "staging_records_per_s": round(received / stage_s) if stage_s else "n/a",
        # reading and staging together: what the source side of a run sustains
        "pull_records_per_s": round(received / pull_s) if pull_s else "n/a",
        "profiles": report["profiles"],
        "changes": people["create"] + people["update"] + people["archive"] + people["delete"],
        **{f"people.{k}": v for k, v in sorted(people.items())},
        "cpu_s": round(run.cpu_user + run.cpu_system, 2),
        "cpu_user_s": round(run.cpu_user, 2),
        "cpu_system_s": round(run.cpu_system, 2),
        "bench_process_cpu_s": round(run.bench_cpu, 2),
        "peak_rss_mb": round(run.peak_rss_mb, 1),
        "main_peak_rss_mb_sampled": round(run.main_rss_mb, 1),
        "other_processes_peak_rss_mb_sampled": round(run.others_rss_mb, 1),
        "processes_seen": run.processes,
        **{f"calls.{k}": v for k, v in sorted(run.calls.items())},
        "calls_total": sum(run.calls.values()),
        "sync_calls": sync,
        "floor_calls": run.floor,
        "time_floor_s": round(time_floor, 3),
        "max_in_flight": run.max_in_flight,
        "rejected_429": run.rejected_429,
    }
    if run.server_cpu is not None:
        figures["postgres_server_cpu_s_sampled"] = round(run.server_cpu, 2)
    if run.floor:
        figures["ratio_to_floor"] = round(sync / run.floor, 4)
        figures["ratio_to_floor_incl_one_time"] = round(sum(run.calls.values()) / run.floor, 4)
        figures["wall_over_time_floor"] = round(run.wall / time_floor, 1) if time_floor else "n/a"
    return figures


# -- targets (written beside the figures, never asserted) ------------------------------------


def verdict(met: bool, text: str) -> str:
    return f"{'met' if met else 'MISSED'}: {text}"


def targets(size: int, engine: str, f: dict[str, Figure]) -> dict[str, str]:
    out: dict[str, str] = {}
    floor_rate = 50_000 if engine == "sqlite" else 30_000
    rate = f.get("first.staging_records_per_s")
    if isinstance(rate, int | float):
        out["staging_rate"] = verdict(rate >= floor_rate, f"{rate:,.0f} >= {floor_rate:,}/s")
    wall = float(f["first.wall_s"])
    limit = {100_000: 30.0, 1_000_000: 300.0}.get(size)
    if limit is not None:
        out["first_sync_time"] = verdict(wall < limit, f"{wall:.1f} s < {limit:.0f} s")
    rss = max(float(f[f"{run}.peak_rss_mb"]) for run in RUNS)
    out["peak_rss"] = verdict(rss < 500, f"{rss:.0f} MB < 500 MB, every process")
    for name, share in (("no_change", 0.03), ("changed", 0.05)):
        ratio = float(f[f"{name}_over_first"])
        out[f"{name}_share"] = verdict(ratio < share, f"{ratio:.1%} < {share:.0%} of the first")
    calls = f.get("first.ratio_to_floor")
    if isinstance(calls, int | float):
        out["mailchimp_calls"] = verdict(calls <= 1.05, f"{calls:.3f} x floor <= 1.05")
    return out


def scaling_targets(figures: dict[str, Figure]) -> dict[str, Figure]:
    """The staging rate at 1M against 10k, per engine, once both are in the results."""
    out: dict[str, Figure] = {}
    for engine in ENGINES:
        small = figures.get(f"{engine}.10000.first.staging_records_per_s")
        large = figures.get(f"{engine}.1000000.first.staging_records_per_s")
        if isinstance(small, int | float) and isinstance(large, int | float) and small:
            out[f"{engine}.target.rate_1m_over_10k"] = verdict(
                large >= 0.8 * small, f"{large / small:.2f} >= 0.8"
            )
    return out


# -- output -----------------------------------------------------------------------------------


def save(figures: dict[str, Figure]) -> Path:
    """Merges into the "e2e" entry, so sizes measured at different times sit together."""
    earlier: dict[str, Figure] = {}
    if results.RESULTS.exists():
        found = json.loads(results.RESULTS.read_text(encoding="utf-8")).get("e2e", {})
        earlier = {k: v for k, v in found.items() if k.split(".")[0] in ENGINES}
    merged = {**earlier, **figures}
    return results.record("e2e", {**merged, **scaling_targets(merged)})


COLUMNS = (
    ("wall", "wall_s"), ("read", "stage_s.pull.read"), ("stage", "stage_s.pull.stage"),
    ("plan+push", "stage_s.plan+push"), ("push", "stage_s.push.mc"), ("ledger", "stage_s.ledger"),
    ("rec/s", "staging_records_per_s"), ("cpu", "cpu_s"), ("rss MB", "peak_rss_mb"),
    ("changes", "changes"), ("calls", "calls_total"), ("sync", "sync_calls"),
    ("floor", "floor_calls"), ("ratio", "ratio_to_floor"),
)  # fmt: skip


def table(figures: dict[str, Figure], configs: list[tuple[str, int]]) -> str:
    lines = ["  ".join([f"{'run':<26}", *(f"{h:>9}" for h, _ in COLUMNS)])]
    for engine, size in configs:
        for run in RUNS:
            cells = [figures.get(f"{engine}.{size}.{run}.{key}", "") for _, key in COLUMNS]
            lines.append(
                "  ".join([f"{f'{engine} {size:,} {run}':<26}", *(f"{c!s:>9}" for c in cells)])
            )
        prefix = f"{engine}.{size}."
        for key, value in figures.items():
            if key.startswith(prefix) and "." not in key[len(prefix) :].replace(
                "per_contact.", ""
            ).replace("target.", ""):
                lines.append(f"    {key[len(prefix) :]}: {value}")
    return "\n".join(lines)


def describe_source(source: Path | None) -> str:
    """Which code the figures are of: the tree given, or the checkout and its commit."""
    if source is not None:
        return str(source.resolve())

    def git(*args: str) -> str:  # read only: no optional locks, so no index refresh
        command = ["git", "--no-optional-locks", "-C", str(ROOT), *args]
        return subprocess.run(command, check=False, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    local = git("status", "--porcelain", "--untracked-files=no")
    return f"{ROOT} at {commit or 'unknown commit'}" + (" with local changes" if local else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_e2e")
    parser.add_argument("--sizes", default="10000,100000", help="customers, comma-separated")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--latency", type=float, default=0.08, help="seconds per API call")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--work", type=Path, default=Options.work, help="stores and runs")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder")
    parser.add_argument(
        "--source",
        type=Path,
        help="run crmsync from this source tree instead of the installed one, e.g. "
        "`git archive <commit> | tar -x -C DIR` for a before/after on the same stores",
    )
    args = parser.parse_args(argv)
    options = Options(args.latency, args.connections, args.work, keep=args.keep, source=args.source)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    figures: dict[str, Figure] = {}
    configs: list[tuple[str, int]] = []
    source = describe_source(options.source)
    for size in sizes:
        contact: dict[str, Figure] | None = None
        for engine in engines:
            found, contact = bench_one(size, engine, options, contact=contact)
            figures.update(found)
            # per size and engine: sizes measured at other times keep their own
            figures[f"{engine}.{size}.crmsync_source"] = source
            figures[f"{engine}.{size}.latency_s"] = options.latency
            figures[f"{engine}.{size}.connections"] = options.connections
            figures[f"{engine}.{size}.measured_at"] = datetime.now(UTC).isoformat(
                timespec="seconds"
            )
            configs.append((engine, size))
    path = save(figures)
    print(table(figures, configs))
    print(f"  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
