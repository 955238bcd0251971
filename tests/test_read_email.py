"""The e-mail fast path never disagrees with email_validator, and a source validates each
address that needs the validator once, across its customers, orders and carts."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import email_validator
import pytest

from connectors.files import FilesSource
from crmsync import normalize
from crmsync.contract import ConnectorContext
from crmsync.errors import RecordError
from crmsync.records import RecordIssue, Stream
from crmsync.sample import SampleSpec, items, write_files
from crmsync.sample.export import render

UNTIL = datetime(2100, 1, 1, tzinfo=UTC)


def full_path(value: object) -> str:
    """What ``normalize.email`` gave before the fast path: text(), then the validator."""
    try:
        raw = normalize.text(value, "email")
    except RecordError as exc:
        return f"error: {exc.reason}"
    if raw is None:
        return "none"
    checked = normalize._checked_email(raw)
    return (
        checked if isinstance(checked, str) else f"error: invalid e-mail address {raw!r}: {checked}"
    )


def with_fast_path(value: object) -> str:
    try:
        found = normalize.email(value, "email", memo=normalize.Memo())
    except RecordError as exc:
        return f"error: {exc.reason}"
    return "none" if found is None else found


def sample_addresses() -> Iterator[str]:
    """Every e-mail of a dirty sample store as its export spells it (customers, orders, carts)."""
    for item in items(SampleSpec(customers=1500, dirty_rate=0.3, seed=3)):
        row = item.raw if item.raw is not None else render(item)
        if row.get("email"):
            yield str(row["email"])


LOCAL = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-."
DOMAIN = string.ascii_lowercase + string.digits + "-."


def adversarial() -> list[str]:
    """Hand-picked edge cases plus random strings over the characters that matter."""
    cases = [
        "a@example.com", "A@Example.COM", " a@example.com ", "\ta@example.com\n",
        ".a@example.com", "a.@example.com", "a..b@example.com", "a@.example.com",
        "a@example.com.", "a@example..com", "a@-example.com", "a@example-.com",
        '"a b"@example.com', '"a"@example.com', "a b@example.com", "a@exa mple.com",
        "a@xn--bcher-kva.example", "a@XN--BCHER-KVA.example", "a@ab--cd.com", "a@xn--.com",
        "a@bücher.example", "ayşe@example.com", "İBRAHİM@EXAMPLE.COM", "ibrahim@example.com",
        "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com", "a@example." + "c" * 63,
        "a@example." + "c" * 64, "a@example.123", "a@123.com", "a@example.c", "a@example.c0m",
        "a@localhost", "a@example.test", "a@example.invalid", "a@example.local",
        "a@example.onion", "a@10.in-addr.arpa", "a@[127.0.0.1]", "a@example",
        "info@example.com", "INFO@example.com", "a+tag@example.com", "o'brien@example.ie",
        "a@@example.com", "a at example.com", "@example.com", "a@", "", " ",
        "x" * 64 + "@example.com", "x" * 65 + "@example.com",
        "x" * 240 + "@example.com", "a@" + ".".join(["b" * 60] * 5) + ".com",
        "a\u200b@example.com", "ａ@example.com", "a@example.com\u00a0", "K@example.com",
        "\u212a@example.com", "a@exam_ple.com", "a@example.co.uk", "a@1example.com",
        "a\\b@example.com", "<a@example.com>", "A <a@example.com>",
    ]  # fmt: skip
    rng = random.Random(10)
    for _ in range(4000):
        local = "".join(rng.choice(LOCAL) for _ in range(rng.randint(0, 12)))
        domain = "".join(rng.choice(DOMAIN) for _ in range(rng.randint(0, 14)))
        tld = rng.choice(["com", "org", "c", "123", "test", "co1", "xn--p1ai", "ORG", ""])
        address = f"{local}@{domain}.{tld}" if tld else f"{local}@{domain}"
        cases.append(address.upper() if rng.random() < 0.1 else address)
    return cases


def test_sample_addresses_take_the_fast_path_and_agree_with_the_validator() -> None:
    addresses = sorted(set(sample_addresses()))
    fast = [a for a in addresses if normalize.plain_email(a) is not None]
    assert len(fast) > 0.9 * len(addresses)  # the fast path is what the sample exercises
    assert any(full_path(a).startswith("error") for a in addresses)  # dirty ones are in
    for address in addresses:
        assert with_fast_path(address) == full_path(address), address


@pytest.mark.parametrize("chunk", range(4))
def test_adversarial_addresses_agree_with_the_validator(chunk: int) -> None:
    cases = adversarial()[chunk::4]
    for address in cases:
        assert with_fast_path(address) == full_path(address), address


def test_the_fast_path_accepts_only_what_the_validator_accepts_unchanged() -> None:
    accepted = [a for a in adversarial() if normalize.plain_email(a) is not None]
    assert len(accepted) > 100
    for address in accepted:
        assert full_path(address) == normalize.plain_email(address), address


def test_every_special_use_domain_of_the_validator_takes_the_full_path() -> None:
    # the fast path keeps its own copy of the names, so that a run need not import the
    # validator: every name the installed validator refuses must be in it
    refused = set(email_validator.SPECIAL_USE_DOMAIN_NAMES)
    assert refused <= set(normalize.SPECIAL_USE_DOMAINS)
    for name in sorted(refused):
        for address in (f"someone@shop.{name}", f"Someone@Mail.Shop.{name.upper()}"):
            assert normalize.plain_email(address) is None, address
            assert with_fast_path(address) == full_path(address), address
            assert full_path(address).startswith("error"), address


def _source(tmp: Path, customers: str, orders: str) -> FilesSource:
    (tmp / "c.csv").write_text(f"customer_id,email\n1,{customers}\n2,{customers}\n")
    line = '{"id": "%s", "customer_id": "1", "email": "%s", "created_at": "2025-01-02T03:04:05Z",'
    line += ' "status": "paid", "currency": "TRY", "total_price": "5", "line_items": []}\n'
    (tmp / "o.jsonl").write_text(line % ("7", orders) + line % ("8", orders))
    config: dict[str, Any] = {
        "kind": "files",
        "customers": {"path": "c.csv", "default_columns": False,
                      "columns": {"external_id": "customer_id", "email": "email"}},
        "orders": {"path": "o.jsonl"},
    }  # fmt: skip
    return FilesSource(config, ConnectorContext(name="shop", config_dir=tmp))


def test_an_address_needing_the_validator_is_validated_once_per_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = email_validator.validate_email

    def counted(candidate: str, **options: Any) -> Any:
        calls.append(candidate)
        return real(candidate, **options)

    monkeypatch.setattr(email_validator, "validate_email", counted)
    # a one-letter TLD is valid but outside the fast path; the bad one fails every time
    source = _source(tmp_path, "Ali@Example.c", "ali@example.c")
    found = [*source.read(Stream.CUSTOMERS, None, UNTIL), *source.read(Stream.ORDERS, None, UNTIL)]
    assert [getattr(r, "email", None) for r in found] == ["ali@example.c"] * 4
    assert calls == ["ali@example.c"]  # one validation: 2 customers and 2 orders, 2 spellings

    calls.clear()
    bad = _source(tmp_path, "ali@exa mple.c", "ali@exa mple.c")
    issues = [*bad.read(Stream.CUSTOMERS, None, UNTIL), *bad.read(Stream.ORDERS, None, UNTIL)]
    assert len(issues) == 4 and len(calls) == 1  # a refusal is remembered too
    for issue in issues:
        assert isinstance(issue, RecordIssue)
        assert "invalid e-mail address 'ali@exa mple.c'" in issue.reason


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize.Memo, "EMAILS", 3)
    memo = normalize.Memo()
    for number in range(10):
        assert normalize.email(f"x{number}@example.c", memo=memo) == f"x{number}@example.c"
        assert len(memo.emails) <= 3
    normalize.clear_caches()
    assert memo.emails == {}


def test_sample_store_files_read_alike_with_and_without_a_shared_memo(tmp_path: Path) -> None:
    """The memo changes no record: a source whose streams share one reads what separate
    reads (each with a fresh memo) read."""
    write_files(SampleSpec(customers=300, dirty_rate=0.3, seed=4), tmp_path)
    config = {
        "kind": "files",
        "customers": {"path": "customers.csv", "columns": {"external_id": "customer_id"}},
        "orders": {"path": "orders.jsonl"},
        "carts": {"path": "carts.jsonl", "columns": {"converted": "completed_at"}},
    }
    context = ConnectorContext(name="shop", config_dir=tmp_path)
    shared = FilesSource(config, context)
    together = [list(shared.read(stream, None, UNTIL)) for stream in Stream]
    apart = [list(FilesSource(config, context).read(stream, None, UNTIL)) for stream in Stream]
    assert together == apart
