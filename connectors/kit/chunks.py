"""Cutting a push into calls the vendor accepts, and sending them side by side.

Every bulk vendor caps a call by count (Mailchimp 500 members, Klaviyo 10,000 profiles)
and some by size as well (Klaviyo 5 MB per import job). And every destination owes the
core exactly one result per change however its calls went, and must tell an outage
(stop the run: counting a failure against every person's retry cap would only punish
them for the vendor's downtime) from a bad chunk (fail those people; they are retried on
later runs). Both are written here once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from dataclasses import dataclass

from crmsync.contract import Change, Outcome, PushResult
from crmsync.errors import AuthError, ConnectorError, RecordError, TransientError
from crmsync.personal import mask_key, mask_text

log = logging.getLogger(__name__)

NO_RESULT = "the destination returned no result"
Send = Callable[[Sequence[Change]], list[PushResult]]


def chunked(
    changes: Sequence[Change],
    max_count: int,
    *,
    max_bytes: int | None = None,
    size_of: Callable[[Change], int] | None = None,
) -> list[list[Change]]:
    """Cuts changes into chunks by count and, where given, by encoded size (size_of(change)
    bytes; a single change bigger than max_bytes gets a chunk of its own, the caller
    rejects it).

    Order is kept, and each chunk is filled as far as both caps allow, which for an
    ordered cut is the fewest chunks. ``size_of`` should count what one change adds to the
    request (its encoding and separator); the request's envelope is the caller's margin
    below the vendor's cap.
    """
    if max_count < 1:
        raise ValueError(f"max_count must be at least 1, not {max_count}")
    if max_bytes is not None and size_of is None:
        raise ValueError("max_bytes needs size_of to measure the changes")
    chunks: list[list[Change]] = []
    current: list[Change] = []
    used = 0
    for change in changes:
        size = size_of(change) if max_bytes is not None and size_of is not None else 0
        if max_bytes is not None and size > max_bytes:
            # too big for any call: alone, so that refusing it costs nobody else a call
            if current:
                chunks.append(current)
            chunks.append([change])
            current, used = [], 0
            continue
        full = len(current) == max_count or (max_bytes is not None and used + size > max_bytes)
        if current and full:
            chunks.append(current)
            current, used = [], 0
        current.append(change)
        used += size
    if current:
        chunks.append(current)
    return chunks


@dataclass(frozen=True, slots=True)
class _Answer:
    """One chunk's results, and the transient error that failed it as a whole, if one did."""

    results: list[PushResult]
    transient: TransientError | None = None


def send_chunks(
    chunks: Sequence[Sequence[Change]],
    send: Send,
    pool: Executor,
    *,
    name: str = "the destination",
) -> list[PushResult]:
    """Sends chunks concurrently (the pool bounds concurrency) and returns exactly one result
    per change, in input order.

    A change missing from send's answer becomes FAILED ("the destination returned no
    result"); a TransientError raised by send makes its chunk FAILED with the error's
    message; when every chunk failed transiently, raises TransientError (the destination
    is down: the core stops the run instead of counting a failure against each person).
    AuthError/ConfigError propagate at once (remaining chunks cancelled).

    Any other ``ConnectorError`` (or ``RecordError``) raised by send fails its chunk with
    the error's message. Anything else is a bug and propagates like an AuthError: the core
    then keeps the batch in flight, which is safe, rather than record a guess. When send
    answers twice for one person and the answers disagree, the one that is not OK wins:
    re-sending an idempotent change is harmless, recording a failed one as done is not.
    ``name`` words the outage error ("Mailchimp is unreachable: ...").

    ``send`` runs on the pool's threads, so it must not wait for other work on that pool.
    """
    futures: list[Future[_Answer]] = [pool.submit(_send_one, send, chunk) for chunk in chunks]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future in done and future.exception() is not None:
                raise _error_of(future)
        answers = [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()  # a no-op for those done; the rest are never started
    transients = [answer.transient for answer in answers]
    first = transients[0] if transients else None
    if first is not None and all(error is not None for error in transients):
        raise TransientError(f"{name} is unreachable: {first}", retry_after=first.retry_after)
    return [result for answer in answers for result in answer.results]


def _error_of(future: Future[_Answer]) -> BaseException:
    error = future.exception()
    assert error is not None  # only called for futures that raised
    return error


def _send_one(send: Send, chunk: Sequence[Change]) -> _Answer:
    try:
        answer = send(chunk)
    except AuthError:
        raise
    except TransientError as exc:
        return _Answer(_all_failed(chunk, str(exc)), exc)
    except (ConnectorError, RecordError) as exc:
        log.warning("a chunk of %d failed: %s", len(chunk), mask_text(str(exc)))
        return _Answer(_all_failed(chunk, str(exc)))
    return _Answer(one_per_change(chunk, answer))


def one_per_change(chunk: Sequence[Change], answer: Sequence[PushResult]) -> list[PushResult]:
    """Exactly one result per change of ``chunk``, in its order, from whatever ``answer``
    holds: results for people not in the chunk are dropped, missing ones are FAILED."""
    wanted = {change.person_key for change in chunk}
    if len(wanted) == len(chunk) == len(answer) and all(
        result.person_key == change.person_key for result, change in zip(answer, chunk, strict=True)
    ):
        return list(answer)  # the usual answer, one per change in order: nothing to mend
    by_key: dict[str, PushResult] = {}
    for result in answer:
        if result.person_key not in wanted:
            log.warning(
                "ignoring a result for %s, who was not in the chunk", mask_key(result.person_key)
            )
            continue
        known = by_key.get(result.person_key)
        if known is None or (known.outcome is Outcome.OK and result.outcome is not Outcome.OK):
            by_key[result.person_key] = result
    return [
        by_key.get(change.person_key)
        or PushResult(change.person_key, Outcome.FAILED, message=NO_RESULT)
        for change in chunk
    ]


def _all_failed(chunk: Sequence[Change], message: str) -> list[PushResult]:
    return [PushResult(change.person_key, Outcome.FAILED, message=message) for change in chunk]
