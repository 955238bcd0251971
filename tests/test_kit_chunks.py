"""The kit's chunking and concurrent sending: one result per change, whatever send does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from connectors.kit import chunked, send_chunks
from crmsync.contract import Action, Change, ConsentIntent, Outcome, PushResult
from crmsync.errors import AuthError, ConfigError, ConnectorError, TransientError


def change(number: int, size: int = 0) -> Change:
    return Change(
        person_key=f"p{number}",
        action=Action.UPSERT,
        is_new=True,
        email=f"p{number}@shop.example",
        phone=None,
        fields={"blob": "x" * size},
        memberships_add=(),
        memberships_remove=(),
        email_intent=ConsentIntent.LEAVE,
        sms_intent=ConsentIntent.LEAVE,
        payload_hash=str(number),
    )


def people(count: int) -> list[Change]:
    return [change(i) for i in range(count)]


def keys(chunks: Sequence[Sequence[Change]]) -> list[list[str]]:
    return [[c.person_key for c in chunk] for chunk in chunks]


def ok(chunk: Sequence[Change]) -> list[PushResult]:
    return [PushResult(c.person_key, Outcome.OK, remote_id=c.person_key) for c in chunk]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


# -- chunked ------------------------------------------------------------------------------


def test_chunks_are_cut_by_count_in_order() -> None:
    assert keys(chunked(people(7), 3)) == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]
    assert chunked([], 3) == []


def test_chunks_are_cut_by_encoded_size_as_well() -> None:
    sizes = [40, 40, 30, 50, 10, 100]
    changes = [change(i, size) for i, size in enumerate(sizes)]
    chunks = chunked(changes, 10, max_bytes=100, size_of=lambda c: len(c.fields["blob"]))
    assert keys(chunks) == [["p0", "p1"], ["p2", "p3", "p4"], ["p5"]]  # 80, 90, 100 bytes


def test_whichever_cap_is_reached_first_cuts_the_chunk() -> None:
    changes = [change(i, 10) for i in range(5)]
    chunks = chunked(changes, 2, max_bytes=1000, size_of=lambda c: len(c.fields["blob"]))
    assert keys(chunks) == [["p0", "p1"], ["p2", "p3"], ["p4"]]


def test_a_change_bigger_than_max_bytes_gets_a_chunk_of_its_own() -> None:
    changes = [change(0, 10), change(1, 10), change(2, 500), change(3, 10)]
    chunks = chunked(changes, 10, max_bytes=100, size_of=lambda c: len(c.fields["blob"]))
    assert keys(chunks) == [["p0", "p1"], ["p2"], ["p3"]]


def test_chunked_refuses_caps_it_cannot_keep() -> None:
    with pytest.raises(ValueError, match="max_count"):
        chunked(people(2), 0)
    with pytest.raises(ValueError, match="size_of"):
        chunked(people(2), 2, max_bytes=10)


# -- send_chunks: exactly one result per change ---------------------------------------------


def test_results_come_one_per_change_in_input_order(pool: ThreadPoolExecutor) -> None:
    def reversed_answer(chunk: Sequence[Change]) -> list[PushResult]:
        return list(reversed(ok(chunk)))

    changes = people(10)
    results = send_chunks(chunked(changes, 3), reversed_answer, pool)
    assert [r.person_key for r in results] == [c.person_key for c in changes]
    assert {r.outcome for r in results} == {Outcome.OK}


def test_a_change_missing_from_the_answer_is_failed(pool: ThreadPoolExecutor) -> None:
    def forgetful(chunk: Sequence[Change]) -> list[PushResult]:
        return ok(chunk)[1:]

    results = send_chunks(chunked(people(4), 2), forgetful, pool)
    assert [(r.person_key, r.outcome, r.message) for r in results] == [
        ("p0", Outcome.FAILED, "the destination returned no result"),
        ("p1", Outcome.OK, ""),
        ("p2", Outcome.FAILED, "the destination returned no result"),
        ("p3", Outcome.OK, ""),
    ]


def test_duplicate_and_stray_answers_still_give_one_result_each(pool: ThreadPoolExecutor) -> None:
    def muddled(chunk: Sequence[Change]) -> list[PushResult]:
        first = chunk[0].person_key
        return [
            *ok(chunk),
            *ok(chunk),  # everyone twice, agreeing
            PushResult(first, Outcome.REJECTED, message="bad field"),  # disagreeing
            PushResult("stranger", Outcome.OK),  # not in the chunk
        ]

    results = send_chunks(chunked(people(4), 2), muddled, pool)
    assert [(r.person_key, r.outcome) for r in results] == [
        ("p0", Outcome.REJECTED),  # OK and REJECTED for one person: not OK wins
        ("p1", Outcome.OK),
        ("p2", Outcome.REJECTED),
        ("p3", Outcome.OK),
    ]


def test_a_person_twice_in_a_chunk_answered_in_order_gets_the_worse_answer_twice(
    pool: ThreadPoolExecutor,
) -> None:
    """An answer one per change and in order needs no mending, unless a person is in the
    chunk twice: then both places get the answer that is not OK."""

    def in_order(chunk: Sequence[Change]) -> list[PushResult]:
        return [PushResult("p0", Outcome.OK), PushResult("p0", Outcome.FAILED, message="no")]

    results = send_chunks([[change(0), change(0)]], in_order, pool)
    assert [(r.person_key, r.outcome) for r in results] == [("p0", Outcome.FAILED)] * 2


def test_a_transient_error_fails_only_its_chunk(pool: ThreadPoolExecutor) -> None:
    def flaky(chunk: Sequence[Change]) -> list[PushResult]:
        if chunk[0].person_key == "p2":
            raise TransientError("HTTP 503 from POST /lists/l1: server error")
        return ok(chunk)

    results = send_chunks(chunked(people(6), 2), flaky, pool)
    assert [(r.person_key, r.outcome) for r in results] == [
        ("p0", Outcome.OK),
        ("p1", Outcome.OK),
        ("p2", Outcome.FAILED),
        ("p3", Outcome.FAILED),
        ("p4", Outcome.OK),
        ("p5", Outcome.OK),
    ]
    assert results[2].message == "HTTP 503 from POST /lists/l1: server error"


def test_other_connector_errors_fail_their_chunk_and_are_no_outage(
    pool: ThreadPoolExecutor,
) -> None:
    calls = 0

    def refusing(chunk: Sequence[Change]) -> list[PushResult]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectorError("Mailchimp 400 Invalid Resource: too big")
        raise TransientError("timed out")

    results = send_chunks([people(2)[:1], people(2)[1:]], refusing, pool)
    assert {r.outcome for r in results} == {Outcome.FAILED}
    assert {r.message for r in results} == {"Mailchimp 400 Invalid Resource: too big", "timed out"}


def test_when_every_chunk_failed_transiently_the_destination_is_down(
    pool: ThreadPoolExecutor,
) -> None:
    def down(chunk: Sequence[Change]) -> list[PushResult]:
        raise TransientError("HTTP 503: server error", retry_after=30.0)

    with pytest.raises(TransientError, match=r"^Mailchimp is unreachable: HTTP 503") as raised:
        send_chunks(chunked(people(5), 2), down, pool, name="Mailchimp")
    assert raised.value.retry_after == 30.0
    with pytest.raises(TransientError, match="the destination is unreachable"):
        send_chunks(chunked(people(1), 2), down, pool)


def test_no_chunks_is_no_outage(pool: ThreadPoolExecutor) -> None:
    def never(chunk: Sequence[Change]) -> list[PushResult]:
        raise AssertionError("nothing to send")

    assert send_chunks([], never, pool) == []


@pytest.mark.parametrize(
    "error",
    [AuthError("HTTP 401: API key invalid"), ConfigError("no audience", key="list_id")],
)
def test_auth_and_config_errors_propagate_and_cancel_the_rest(error: Exception) -> None:
    sent: list[str] = []

    def refused(chunk: Sequence[Change]) -> list[PushResult]:
        sent.append(chunk[0].person_key)
        raise error

    with ThreadPoolExecutor(max_workers=1) as one, pytest.raises(type(error)):
        send_chunks([[c] for c in people(20)], refused, one)
    assert len(sent) < 20  # the chunks not yet started were cancelled


def test_an_auth_error_does_not_wait_for_slow_chunks(pool: ThreadPoolExecutor) -> None:
    release = threading.Event()

    def slow_then_refused(chunk: Sequence[Change]) -> list[PushResult]:
        if chunk[0].person_key == "p0":
            release.wait(10)
            return ok(chunk)
        raise AuthError("HTTP 401")

    started = time.monotonic()
    try:
        with pytest.raises(AuthError):
            send_chunks([[c] for c in people(2)], slow_then_refused, pool)
        assert time.monotonic() - started < 5 and not release.is_set()
    finally:
        release.set()


def test_a_bug_in_send_propagates_instead_of_becoming_a_guess(pool: ThreadPoolExecutor) -> None:
    def buggy(chunk: Sequence[Change]) -> list[PushResult]:
        raise KeyError("members")

    with pytest.raises(KeyError):
        send_chunks(chunked(people(3), 2), buggy, pool)


def test_chunks_go_side_by_side_within_the_pools_bound() -> None:
    lock = threading.Lock()
    in_flight = peak = 0

    def slow(chunk: Sequence[Change]) -> list[PushResult]:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return ok(chunk)

    with ThreadPoolExecutor(max_workers=3) as three:
        results = send_chunks(chunked(people(20), 2), slow, three)
    assert len(results) == 20 and peak == 3
