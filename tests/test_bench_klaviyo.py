"""The Klaviyo bench: its floor of import jobs (Klaviyo's two caps on a job, 10,000
profiles and 5 MB, each applied alone, the bytes measured as the connector measures
them), and its runs collected as the core collects them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import orjson

from bench import bench_klaviyo
from bench.bench_mailchimp import generate
from bench.e2e.fake import Audience
from bench.e2e.options import Options
from bench.e2e.vendors import FakeHost, Klaviyo
from connectors.klaviyo.payloads import job_bytes_available, profile_entry, size_of
from tests.fakes.klaviyo import FakeKlaviyo, klaviyo_fake
from tests.test_klaviyo_destination import allow
from tests.test_klaviyo_run_imports import fewest_jobs, make
from tests.test_klaviyo_run_imports import people as padded_people

__all__ = ["klaviyo_fake"]

USABLE = job_bytes_available(5 * 1024 * 1024)  # a job's bytes for its profiles


def upserts(count: int) -> list[Any]:
    upsert = SimpleNamespace(value="upsert")
    moves: dict[str, Any] = {"memberships_add": (), "memberships_remove": ()}
    return [SimpleNamespace(action=upsert, is_new=False, **moves) for _ in range(count)]


def test_import_jobs_are_the_larger_of_the_count_and_the_bytes() -> None:
    assert bench_klaviyo.import_jobs(10_409, 10_409 * 400) == 2  # by count
    assert bench_klaviyo.import_jobs(10_000, 10_000 * 400) == 1
    # 10,000 profiles of 600 bytes take 6 MB: two jobs, though one holds 10,000
    assert bench_klaviyo.import_jobs(10_000, 10_000 * 600) == 2
    assert bench_klaviyo.import_jobs(25_000, 25_000 * 600) == 3
    assert bench_klaviyo.import_jobs(30_000, 30_000 * 600) == 4  # 18 MB: by bytes
    assert bench_klaviyo.import_jobs(1, USABLE) == 1
    assert bench_klaviyo.import_jobs(2, USABLE + 1) == 2
    assert bench_klaviyo.import_jobs(0, 0) == 0


def test_the_floor_counts_the_bytes_given_or_measures_the_changes() -> None:
    assert bench_klaviyo.floor(upserts(10_000), set(), 10_000 * 400) == 1
    assert bench_klaviyo.floor(upserts(10_000), set(), 10_000 * 600) == 2
    people = bench_klaviyo.as_klaviyo(generate(300))
    measured = sum(size_of(profile_entry(c)) for c in people)
    assert bench_klaviyo.floor(people, set()) == bench_klaviyo.floor(people, set(), measured)
    # the same people padded past 5 MB in all: the floor takes the jobs their bytes need
    padded = [replace(c, fields={**c.fields, "note": "x" * 20_000}) for c in people]
    heavy = sum(size_of(profile_entry(c)) for c in padded)
    assert math.ceil(heavy / USABLE) == 2
    assert bench_klaviyo.floor(padded, set()) == bench_klaviyo.floor(people, set()) + 1


def test_the_e2e_floor_takes_the_bytes_the_fake_last_received() -> None:
    """The e2e bench's floor from what changed at the fake: 10,000 new people whose
    profiles took 600 bytes each in the imports the fake received need two jobs."""
    people = {f"p{i}@x": ("NEVER_SUBSCRIBED", "{}") for i in range(10_000)}
    klaviyo = Klaviyo(Options())
    asked: list[list[str]] = []

    def profile_bytes(labels: list[str]) -> int:
        asked.append(labels)
        return 600 * len(labels)

    klaviyo.host = SimpleNamespace(profile_bytes=profile_bytes)
    assert klaviyo.floor(Audience({}, {}), Audience(people, {})) == 2
    assert sorted(asked[0]) == sorted(people)
    klaviyo.host = SimpleNamespace(profile_bytes=lambda labels: 400 * len(labels))
    assert klaviyo.floor(Audience({}, {}), Audience(people, {})) == 1


def test_the_fake_host_keeps_the_bytes_of_each_imported_profile() -> None:
    """Measured as the connector measures a profile in a job (``payloads.size_of``), by the
    audience's label (the e-mail in lower case, else the phone), the last import winning."""
    host = FakeHost("klaviyo", 0.0)
    try:
        first = {"type": "profile", "attributes": {"email": "A@x.com", "first_name": "Ayşe"}}
        phone = {"type": "profile", "attributes": {"phone_number": "+905551112233"}}
        job = {"data": {"type": "profile-bulk-import-job",
                        "attributes": {"profiles": {"data": [first, phone]}}}}  # fmt: skip
        host.fake.handle("POST", "/api/profile-bulk-import-jobs", {}, orjson.dumps(job))
        assert host.profile_bytes(["a@x.com"]) == size_of(first)
        assert host.profile_bytes(["a@x.com", "+905551112233"]) == size_of(first) + size_of(phone)
        again = {"type": "profile", "attributes": {"email": "a@x.com", "last_name": "Yılmaz"}}
        body = json.dumps({"data": again}).encode()
        host.fake.handle("POST", "/api/profile-import?additional-fields[profile]=x", {}, body)
        assert host.profile_bytes(["a@x.com"]) == size_of(again)
        host.fake.handle("POST", "/api/profile-bulk-import-jobs", {}, b"not json")
        assert host.profile_bytes(["nobody@x.com"]) == 0
    finally:
        host.stop()


def test_the_bench_collects_a_run_as_the_core_does_until_nobody_is_pending(
    klaviyo_fake: FakeKlaviyo,
) -> None:
    """Pushes cut by bytes hold their last job, and list moves wait for the run's list job:
    the bench follows everyone handed on, so every person ends OK and the run's import
    jobs are the floor's (two here, where the pushes one by one would open three)."""
    klaviyo_fake.rate_limits_enabled = False
    people = padded_people(32)
    allow(klaviyo_fake, people)
    dest = make(klaviyo_fake)
    try:
        figures = bench_klaviyo.measure(dest, klaviyo_fake, people)
    finally:
        dest.close()
    assert figures["ok"] == 32
    assert klaviyo_fake.calls[bench_klaviyo.IMPORT_JOB] == fewest_jobs(people) == 2
    assert klaviyo_fake.calls[bench_klaviyo.LIST_ADD] == 1  # the run's one remainder
