"""The fake vendor a bench run pushes to (``--destination``): its table in the user's
configuration, what it holds after a run, its calls by name, the floor of calls and the
time its limits make inevitable.

Mailchimp is the bench's first destination and keeps its figures as they were: its fake
answers in this process (``bench.e2e.fake``) with the bench's connection cap, and the time
floor is the floor's calls x latency / connections.

Klaviyo and HubSpot answer each call after the bench's latency, with the limits the
vendors publish: Klaviyo's burst and steady rate per endpoint as the fake reads them from
the spec (``x-klaviyo-ratelimit``, answered 429 past them), HubSpot's 100 calls in any
10 seconds (Free and Starter, as ``bench.bench_hubspot``). Their fakes are served from a
child process (``bench.fake_process``), as the HubSpot bench serves its own: the HubSpot
fake checks every contact in Python, and here it would share this process's GIL with the
watcher and count in this process's CPU; the fake's CPU is reported apart
(``fake_cpu_s``). Spec validation is off for Klaviyo, as for Mailchimp, for speed.

Their floors are the vendor benches' own (``bench.bench_klaviyo.floor``,
``bench.bench_hubspot.floor``), given as changes what the fake shows changed in the run:
each person whose fields, consent or lists differ. Klaviyo: import jobs enough for the
upserted people by count (10,000 a job) and by bytes (5 MB a job, less its envelope),
the bytes of each person's profile as the connector measures it (``payloads.size_of``)
in the last import the fake received for them; a subscribe job per 1,000 new opt-ins and
an unsubscribe job per 100 new opt-outs (a changed consent counts as new), a create per
new list, per list a call per 1,000 added and per 1,000 removed. HubSpot: an upsert per
100 changed contacts, per list one call per ``list_batch`` moves, a create per new list,
one update of the segments property when it needs new options, and an archive call per
100 contacts archived. The time floors are the benches' too: Klaviyo's the least time
its per-endpoint limits allow for the run's calls, HubSpot's
``(⌈calls / 100⌉ - 1) x 10 s``, every call of the run counted.

A run on workers shares the account's budget in Redis (``[celery] shared_budget``), so
the workers together stay within the limits.
"""

from __future__ import annotations

import csv
import json
import math
import os
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import orjson

from bench import bench_hubspot, bench_klaviyo
from bench.e2e.config import KEY_ENV, config_text, pipeline_text
from bench.e2e.fake import SYNC_CALLS, Audience, call_name, floor_calls, new_fake
from bench.e2e.options import CONFIG_NAMES, Options
from bench.e2e.watch import status_kb
from bench.fake_process import served_in_child

if TYPE_CHECKING:
    from tests.fakes.mailchimp import FakeMailchimp

PER_TEN_SECONDS = 100  # HubSpot's window on Free and Starter, as bench.bench_hubspot uses
SEGMENTS_PROPERTY = "crmsync_segments"  # the HubSpot connector's default
# the Klaviyo imports whose profiles the floor measures: a bulk job, a single import
IMPORTS = ("/api/profile-bulk-import-jobs", "/api/profile-import")
KLAVIYO_CALLS = {
    bench_klaviyo.IMPORT_JOB: "import_job",
    ("GET", "/api/profile-bulk-import-jobs/{job_id}"): "import_job_poll",
    ("GET", "/api/profiles"): "profiles_read",
    ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors"): "import_job_errors",
    ("POST", "/api/profile-import"): "profile_import",
    bench_klaviyo.SUBSCRIBE_JOB: "subscribe_job",
    bench_klaviyo.UNSUBSCRIBE_JOB: "unsubscribe_job",
    ("POST", "/api/profile-suppression-bulk-create-jobs"): "suppress_job",
    bench_klaviyo.LIST_CREATE: "list_create",
    bench_klaviyo.LIST_ADD: "list_add",
    bench_klaviyo.LIST_REMOVE: "list_remove",
    ("GET", "/api/lists"): "lists_read",
}
# the Klaviyo bench's writes, with a profile imported alone (a push of fewer than ten)
# and a suppression job (a person deleted at the source)
KLAVIYO_SYNC: tuple[str, ...] = ("import_job", "profile_import", "subscribe_job")
KLAVIYO_SYNC += ("unsubscribe_job",)
KLAVIYO_SYNC += ("suppress_job", "list_create", "list_add", "list_remove")
HUBSPOT_CALLS = {
    bench_hubspot.UPSERT: "upsert",
    bench_hubspot.MOVE: "list_move",
    bench_hubspot.CREATE_LIST: "list_create",
    bench_hubspot.GROW_OPTIONS: "property_update",
    ("POST", "archive_contacts"): "archive",
}
# the HubSpot bench's writes, and the archive of contacts deleted at the source
HUBSPOT_SYNC: tuple[str, ...] = ("upsert", "list_move", "list_create", "property_update", "archive")


@dataclass(frozen=True)
class Counted:
    """What the fake saw of one run: calls by name, those the floor counts, the floor of
    what changed there and its time, the peak requests in flight, the 429s answered and,
    for a fake of its own process, its CPU."""

    calls: Counter[str]
    sync: int
    floor: int
    time_floor: float
    max_in_flight: int
    rejected_429: int
    fake_cpu: float | None = None
    fake_peak_kb: int = 0


class Vendor:
    """The fake Mailchimp, in this process, as a bench configuration uses it."""

    destination = "mailchimp"
    # the destination's name in the configuration, which the run's report keys it by
    name = CONFIG_NAMES["mailchimp"]
    key_env = KEY_ENV  # the configuration names it; the run's environment holds the key
    sync_calls: tuple[str, ...] = SYNC_CALLS

    def __init__(self, options: Options, fake: FakeMailchimp | None = None) -> None:
        self.options = options
        self.fake = fake or new_fake(options)
        self._before = Audience({}, {})
        self._ended = 0.0  # when the last run ended (time.monotonic)

    def start(self) -> None:
        self.fake.start()

    def stop(self) -> None:
        self.fake.stop()

    def secret(self) -> str:
        return self.fake.api_key

    def config(self, state_url: str, data: Path) -> str:
        """The user's configuration: the store's files to this destination."""
        return config_text(state_url, data, self.fake, self.options.connections)

    def shared_on_destination(self) -> bool:
        """On workers, whether the budget is shared by the destination's own
        ``http.rate.shared`` (Mailchimp, as before) or by ``[celery] shared_budget``."""
        return True

    def audience(self) -> Audience:
        return Audience.of(self.fake)

    def begin(self) -> None:
        """Before a run: what the fake holds, and its counters from zero."""
        self._before = self.audience()
        self.fake.reset_counters()

    def end(self) -> tuple[Audience, Counted]:
        """After a run: what the fake holds and what it saw of the run."""
        self._ended = time.monotonic()
        after = self.audience()
        calls = Counter({call_name(m, r): n for (m, r), n in self.fake.calls.items()})
        floor = floor_calls(self._before, after)
        counted = Counted(
            calls,
            sum(calls[k] for k in self.sync_calls),
            floor,
            floor * self.options.latency / self.options.connections,
            self.fake.max_in_flight,
            self.fake.concurrency_rejections,
        )
        return after, counted

    def settle(self) -> None:
        """Before each run: until the earlier calls left the rate windows, and the run
        starts where they begin (Mailchimp has none: only connections)."""

    def expect(self, data: Path) -> set[str]:
        """The customers who must end up subscribed there (checked by ``problems``), from
        the store's files; none checked for Mailchimp, whose audience is compared only."""
        return set()

    def problems(self, audience: Audience, consented: set[str]) -> list[str]:
        """What is wrong at the fake after a run."""
        return []


class ServedVendor(Vendor):
    """Klaviyo or HubSpot: a fake served from a child process (``FakeHost``)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._stack = ExitStack()
        self.host: Any = None
        self.base_url = self._secret = ""
        self._before = Audience({}, {})
        self._options_before: frozenset[str] = frozenset()
        self._ended = 0.0

    def start(self) -> None:
        self.host = self._stack.enter_context(
            served_in_child(FakeHost, self.destination, self.options.latency)
        )
        self._secret, self.base_url = self.host.address()

    def stop(self) -> None:
        self._stack.close()

    def secret(self) -> str:
        return self._secret

    def config(self, state_url: str, data: Path) -> str:
        return pipeline_text(state_url, data, self.name, self.table(self.options.connections))

    def table(self, connections: int) -> str:
        """The destination's table in the configuration."""
        raise NotImplementedError

    def shared_on_destination(self) -> bool:
        return False

    def expect(self, data: Path) -> set[str]:
        """Every customer whose latest consent in the files is an opt-in, with an e-mail
        address crmsync accepts and a row of it that a source keeps (an id, dates that
        parse, not deleted: a deleted duplicate of a kept customer leaves the address
        theirs); the Klaviyo fake is told them too, and any other subscribed there is one
        of its consent problems."""
        from tests.e2e import consented

        kept: set[str] = set()
        refused: set[str] = set()
        with open(data / "customers.csv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                (kept if _kept(row) else refused).add(_email(row))
        found = consented(data) - (refused - kept)
        self.host.expect_consented(sorted(found))
        return found

    def audience(self) -> Audience:
        found: Audience = self.host.audience()
        return found

    def begin(self) -> None:
        self._before = self.audience()
        self._options_before = self.host.options()
        self.host.reset_counters()

    def end(self) -> tuple[Audience, Counted]:
        self._ended = time.monotonic()
        after = self.audience()
        counters = self.host.counters()
        raw: Counter[tuple[str, str]] = Counter(counters["calls"])
        calls = Counter({self.call_name(m, r): n for (m, r), n in raw.items()})
        counted = Counted(
            calls,
            sum(calls[k] for k in self.sync_calls),
            self.floor(self._before, after),
            self.time_floor(raw),
            counters["max_in_flight"],
            counters["rate_limited"],
            round(counters["cpu_s"], 3),
            counters["peak_kb"],
        )
        return after, counted

    def call_name(self, method: str, route: str) -> str:
        raise NotImplementedError

    def floor(self, before: Audience, after: Audience) -> int:
        raise NotImplementedError

    def time_floor(self, calls: Counter[tuple[str, str]]) -> float:
        raise NotImplementedError

    def problems(self, audience: Audience, consented: set[str]) -> list[str]:
        """The fake's own (requests the vendor does not allow, consent crmsync must not
        give), and every consented customer missing or not subscribed there."""
        found: list[str] = self.host.problems()
        missing = [e for e in sorted(consented) if not self.holds_consented(audience, e)]
        if missing:
            found.append(f"{len(missing)} consented customer(s) missing or not subscribed, "
                         f"e.g. {missing[:3]}")  # fmt: skip
        return found

    def holds_consented(self, audience: Audience, email: str) -> bool:
        raise NotImplementedError


class Klaviyo(ServedVendor):
    destination = "klaviyo"
    name = CONFIG_NAMES["klaviyo"]
    key_env = "CRMSYNC_BENCH_KLAVIYO_KEY"
    sync_calls = KLAVIYO_SYNC

    def table(self, connections: int) -> str:
        return f"""[destinations.{self.name}]
kind = "klaviyo"
api_key = "${{{self.key_env}}}"
base_url = "{self.base_url}"
[destinations.{self.name}.http.rate]
max_concurrency = {connections}
"""

    def call_name(self, method: str, route: str) -> str:
        return KLAVIYO_CALLS.get((method, route)) or f"{method} {route}"

    def floor(self, before: Audience, after: Audience) -> int:
        from crmsync.contract import Action, ConsentIntent

        changes = []
        upserted: list[str] = []
        for key, (consent, fields) in after.members.items():
            adds, removes = _moved(key, before, after)
            old = before.members.get(key)
            if old == (consent, fields) and not adds and not removes:
                continue
            new_consent = old is None or old[0] != consent
            intent = ConsentIntent.LEAVE
            if new_consent and consent == "SUBSCRIBED":
                intent = ConsentIntent.SUBSCRIBE_IF_NEW
            elif new_consent and consent == "UNSUBSCRIBED":
                intent = ConsentIntent.UNSUBSCRIBE
            upsert = old is None or old[1] != fields
            if upsert:
                upserted.append(key)
            changes.append(
                SimpleNamespace(
                    action=SimpleNamespace(value=Action.UPSERT.value if upsert else "none"),
                    is_new=new_consent,
                    email_intent=intent,
                    memberships_add=adds,
                    memberships_remove=removes,
                )
            )
        profile_bytes = int(self.host.profile_bytes(upserted))
        return bench_klaviyo.floor(changes, set(before.tags), profile_bytes)

    def time_floor(self, calls: Counter[tuple[str, str]]) -> float:
        from connectors.klaviyo.config import RateLimits

        return bench_klaviyo.rate_limit_seconds(calls, RateLimits())

    def settle(self) -> None:
        """The fake counts each endpoint's calls in fixed windows of a second and a minute
        (on the machine's monotonic clock, which its process shares): until the minute
        after the last run's end has begun, and before the first run until the next
        minute begins. Every run then starts where a minute does: where in Klaviyo's
        minute a run's calls fall moves its end by up to a minute (the look-ups at 750 a
        minute, the list calls at 150), which made runs of the same code differ by tens
        of seconds and hid what a change gained."""
        if self.options.settle:
            after = self._ended or time.monotonic()
            _sleep_until((math.floor(after / 60) + 1) * 60 + 0.2)

    def holds_consented(self, audience: Audience, email: str) -> bool:
        found = audience.members.get(email)
        return found is not None and found[0] == "SUBSCRIBED"


class HubSpot(ServedVendor):
    destination = "hubspot"
    name = CONFIG_NAMES["hubspot"]
    key_env = "CRMSYNC_BENCH_HUBSPOT_TOKEN"
    sync_calls = HUBSPOT_SYNC

    def table(self, connections: int) -> str:
        return f"""[destinations.{self.name}]
kind = "hubspot"
access_token = "${{{self.key_env}}}"
base_url = "{self.base_url}"
lists = true
[destinations.{self.name}.rate_limits]
per_ten_seconds = {PER_TEN_SECONDS}
[destinations.{self.name}.http.rate]
max_concurrency = {connections}
"""

    def call_name(self, method: str, operation: str) -> str:
        return HUBSPOT_CALLS.get((method, operation)) or f"{method} {operation}"

    def floor(self, before: Audience, after: Audience) -> int:
        from connectors.hubspot.config import HubSpotConfig

        changes = []
        for key, entry in after.members.items():
            adds, removes = _moved(key, before, after)
            if before.members.get(key) == entry and not adds and not removes:
                continue
            lists = tuple(name for name, members in after.tags.items() if key in members)
            changes.append(
                SimpleNamespace(memberships=lists, memberships_add=adds, memberships_remove=removes)
            )
        list_batch = int(HubSpotConfig.model_fields["list_batch"].default)
        archived = len(before.members.keys() - after.members.keys())
        options = set(self._options_before)
        lowest = bench_hubspot.floor(changes, list_batch, set(before.tags), options)
        return lowest + math.ceil(archived / 100)

    def time_floor(self, calls: Counter[tuple[str, str]]) -> float:
        return bench_hubspot.rate_limit_seconds(sum(calls.values()), PER_TEN_SECONDS)

    def settle(self) -> None:
        """The fake's window rolls over 10 seconds: until the last run's calls left it."""
        if self.options.settle:
            _sleep_until(self._ended + bench_hubspot.WINDOW + 0.5)

    def holds_consented(self, audience: Audience, email: str) -> bool:
        found = audience.members.get(email)
        return found is not None and found[0] == "contact"  # there, and not opted out


def vendor(options: Options, fake: FakeMailchimp | None = None) -> Vendor:
    """The vendor ``options.destination`` names (``fake``: a Mailchimp fake of the test's)."""
    if options.destination == "klaviyo":
        return Klaviyo(options)
    if options.destination == "hubspot":
        return HubSpot(options)
    return Vendor(options, fake)


def _moved(key: str, before: Audience, after: Audience) -> tuple[tuple[str, ...], ...]:
    """The lists ``key`` joined and left between two audiences."""
    adds = tuple(n for n, m in after.tags.items() if key in m and key not in before.tags.get(n, ()))
    removes = tuple(
        n for n, m in before.tags.items() if key in m and key not in after.tags.get(n, ())
    )
    return adds, removes


def _kept(row: dict[str, str]) -> bool:
    """Whether crmsync keeps a customer row of the export: an id, not deleted, dates that
    parse (the sample store's dirty rows that a source refuses have none or bad ones)."""
    if not row["customer_id"].strip() or row["deleted"] == "true":
        return False
    for column in ("created_at", "updated_at", "email_marketing_updated_at"):
        try:
            if row[column]:
                datetime.fromisoformat(row[column])
        except ValueError:
            return False
    return True


def _email(row: dict[str, str]) -> str:
    from crmsync import normalize
    from crmsync.errors import RecordError

    try:
        return normalize.email(row["email"]) or ""
    except RecordError:
        return ""


def _sleep_until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        time.sleep(wait)


class FakeHost:
    """The fake Klaviyo or HubSpot, served from the bench's child process: what the bench
    asks of it, in values that cross a process boundary."""

    def __init__(self, destination: str, latency: float) -> None:
        from tests.fakes.hubspot import FakeHubSpot
        from tests.fakes.klaviyo import FakeKlaviyo

        self.destination = destination
        self.fake: Any
        if destination == "klaviyo":
            # every import job complete at its first poll, as bench.bench_klaviyo's
            self.fake = FakeKlaviyo(validate=False, latency=latency, job_polls_until_complete=1)
            self.fake.expect_consented(())  # until the bench names the consented
        else:
            self.fake = FakeHubSpot(per_ten_seconds=PER_TEN_SECONDS, latency=latency)
        self._lock = threading.Lock()
        self._in_flight = self.max_in_flight = 0
        # CRMSYNC_BENCH_TIMELINE=DIR: each run's calls (start, method, path, status) to a CSV
        self._timeline_dir = os.environ.get("CRMSYNC_BENCH_TIMELINE")
        self._timeline: list[tuple[float, str, str, int]] | None = (
            [] if self._timeline_dir else None
        )
        self._reset_at = time.monotonic()
        handle = self.fake.handle

        def counted(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
            started = time.monotonic()
            with self._lock:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
            answer = None
            try:
                answer = handle(method, target, headers, body)
                return answer
            finally:
                with self._lock:
                    self._in_flight -= 1
                    if self._timeline is not None:
                        status = answer[0] if isinstance(answer, tuple) else 0
                        path = target.split("?", 1)[0]
                        self._timeline.append((started, method, path, status))

        # Klaviyo: the bytes of each person's profile as last imported, for the floor's jobs
        self._profile_bytes: dict[str, int] = {}

        def measured(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
            path = target.split("?", 1)[0]
            if method == "POST" and path in IMPORTS:
                self._measure(path, body)
            return counted(method, target, headers, body)

        # the peak in flight, as the fake Mailchimp keeps it
        self.fake.handle = measured if destination == "klaviyo" else counted
        self.fake.start()
        self._cpu_at_reset = time.process_time()

    def address(self) -> tuple[str, str]:
        """The key (or token) and the base URL a destination needs."""
        secret = self.fake.api_key if self.destination == "klaviyo" else self.fake.token
        return str(secret), str(self.fake.base_url)

    def expect_consented(self, emails: list[str]) -> None:
        """Klaviyo: the people allowed to end up subscribed (anyone else is a problem)."""
        if self.destination == "klaviyo":
            self.fake.expect_consented(emails)

    def audience(self) -> Audience:
        """Per person (by e-mail, lower case) the consent and the fields as one
        fingerprint; per list (every list, empty ones too) its members."""
        with self.fake._lock:
            if self.destination == "klaviyo":
                return _klaviyo_audience(self.fake)
            return _hubspot_audience(self.fake)

    def options(self) -> frozenset[str]:
        """HubSpot: the segments property's options (none for Klaviyo)."""
        if self.destination != "hubspot":
            return frozenset()
        with self.fake._lock:
            found = self.fake.properties.get(SEGMENTS_PROPERTY)
            return frozenset(found.values()) if found is not None else frozenset()

    def _measure(self, path: str, body: bytes) -> None:
        """Keeps the bytes each profile of a Klaviyo import takes in a job body (the
        connector's ``payloads.size_of``), by the person's label in the audience."""
        from connectors.klaviyo.payloads import size_of

        try:
            data = orjson.loads(body)["data"]
            entries = [data] if path == IMPORTS[1] else data["attributes"]["profiles"]["data"]
            found: dict[str, int] = {}
            for entry in entries:
                attributes = entry["attributes"]
                label = attributes.get("email") or attributes.get("phone_number")
                if label:
                    found[str(label).lower()] = size_of(entry)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not an import the fake accepts: it answers that itself
        with self._lock:
            self._profile_bytes.update(found)

    def profile_bytes(self, labels: list[str]) -> int:
        """Klaviyo: the bytes of these people's profiles as last imported, summed."""
        with self._lock:
            return sum(self._profile_bytes.get(label, 0) for label in labels)

    def reset_counters(self) -> None:
        self.fake.reset_counters()
        with self._lock:
            self.max_in_flight = self._in_flight
            self._reset_at = time.monotonic()
            if self._timeline is not None:
                self._timeline.clear()
        self._cpu_at_reset = time.process_time()

    def counters(self) -> dict[str, Any]:
        """Calls by (method, route or operation), 429s and the peak in flight since the
        last reset, the fake's CPU meanwhile and its process's peak RSS (kB) so far."""
        with self.fake._lock:
            calls, rate_limited = dict(self.fake.calls), self.fake.rate_limited
        self._write_timeline()
        return {
            "calls": calls,
            "rate_limited": rate_limited,
            "max_in_flight": self.max_in_flight,
            "cpu_s": time.process_time() - self._cpu_at_reset,
            "peak_kb": status_kb(os.getpid(), "VmHWM"),
        }

    def _write_timeline(self) -> None:
        """The calls since the last reset, one line each: seconds since it to the call's
        start, method, path and status (0: the connection dropped)."""
        if self._timeline is None or self._timeline_dir is None:
            return
        with self._lock:
            rows = sorted((t - self._reset_at, m, p, n) for t, m, p, n in self._timeline)
        folder = Path(self._timeline_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"calls-{len(list(folder.glob('calls-*.csv'))) + 1}.csv"
        path.write_text("".join(f"{t:.3f},{m},{p},{n}\n" for t, m, p, n in rows))

    def problems(self) -> list[str]:
        """Requests the vendor does not allow, and consent crmsync must not give."""
        with self.fake._lock:
            return [*self.fake.violations, *self.fake.consent_problems()]

    def stop(self) -> None:
        self.fake.stop()


def _klaviyo_audience(fake: Any) -> Audience:
    members: dict[str, tuple[str, str]] = {}
    for p in fake.profiles.values():
        fields = [p.email, p.phone_number, p.external_id, p.first_name, p.last_name]
        fields += [p.organization, p.locale, p.title, p.image, p.location, p.properties]
        fields.append(p.sms_marketing.consent)
        text = json.dumps(fields, sort_keys=True, default=str)
        members[p.label.lower()] = (p.email_marketing.consent, text)
    labels = {pid: p.label.lower() for pid, p in fake.profiles.items()}
    tags = {
        found.name: frozenset(labels[pid] for pid in found.members if pid in labels)
        for found in fake.lists.values()
    }
    return Audience(members, tags)


def _hubspot_audience(fake: Any) -> Audience:
    live = {c.id: c for c in fake.contacts_by_id.values() if not c.archived}
    members = {
        c.email: (
            "opted_out" if c.properties.get("hs_email_optout") == "true" else "contact",
            json.dumps(c.properties, sort_keys=True),
        )
        for c in live.values()
    }
    tags = {
        found.name: frozenset(live[m].email for m in found.members if m in live)
        for found in fake.lists.values()
    }
    return Audience(members, tags)
