"""`crmsync check` validates a mapping completely: whatever `run` would fail on for the
mapping's sake is a config error naming its TOML key, in the files and the REST source
alike (the crash of issue 9: an orders stream mapping no `email` passed `check`, then
`run` died in `Order.__init__`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from connectors.files_config import CartsFile, CustomersFile, OrdersFile
from connectors.records import (
    FIELDS,
    ROW_FIELDS,
    MappingKeys,
    RowsSpec,
    compile_stream,
    mapping_issues,
)
from crmsync.config import validate_connector
from crmsync.errors import ConfigIssue
from crmsync.records import RecordIssue, Stream
from crmsync.registry import SOURCES

FULL: dict[Stream, dict[str, Any]] = {
    Stream.CUSTOMERS: {"external_id": "id"},
    Stream.ORDERS: {
        "external_id": "id",
        "placed_at": "at",
        "status": "state",
        "currency": "cur",
        "total": "sum",
        "email": "mail",
        "customer_external_id": "cid",
    },
    Stream.CARTS: {
        "external_id": "id",
        "currency": "cur",
        "value": "sum",
        "email": "mail",
        "customer_external_id": "cid",
    },
}
ROWS = {"quantity": "q", "unit_price": "p"}
ROWS_NAME = {Stream.ORDERS: "lines", Stream.CARTS: "items"}
FILES_MODEL = {Stream.CUSTOMERS: CustomersFile, Stream.ORDERS: OrdersFile, Stream.CARTS: CartsFile}

# (stream, what is left out, the key the error must name, relative to the stream's table)
REQUIRED_CASES: list[tuple[Stream, tuple[str, ...], str]] = [
    (Stream.CUSTOMERS, ("external_id",), "fields.external_id"),
    (Stream.ORDERS, ("external_id",), "fields.external_id"),
    (Stream.ORDERS, ("placed_at",), "fields.placed_at"),
    (Stream.ORDERS, ("status",), "fields.status"),
    (Stream.ORDERS, ("currency",), "fields.currency"),
    (Stream.ORDERS, ("total", "lines"), "fields.total"),  # neither mapped nor computable
    (Stream.ORDERS, ("email", "customer_external_id"), "fields.email"),  # nobody's order
    (Stream.ORDERS, ("lines.quantity",), "lines.fields.quantity"),
    (Stream.ORDERS, ("lines.unit_price",), "lines.fields.unit_price"),
    (Stream.CARTS, ("external_id",), "fields.external_id"),
    (Stream.CARTS, ("currency",), "fields.currency"),
    (Stream.CARTS, ("value", "items"), "fields.value"),
    (Stream.CARTS, ("email", "customer_external_id"), "fields.email"),
    (Stream.CARTS, ("items.quantity",), "items.fields.quantity"),
    (Stream.CARTS, ("items.unit_price",), "items.fields.unit_price"),
]


def rest_stream(stream: Stream, leave_out: tuple[str, ...]) -> dict[str, Any]:
    table: dict[str, Any] = {
        "path": f"/{stream}",
        "fields": {k: v for k, v in FULL[stream].items() if k not in leave_out},
    }
    rows = ROWS_NAME.get(stream)
    if rows and rows not in leave_out:
        fields = {k: v for k, v in ROWS.items() if f"{rows}.{k}" not in leave_out}
        table[rows] = {"path": "rows", "fields": fields}
    return table


def rest_issues(stream: Stream, table: dict[str, Any]) -> list[ConfigIssue]:
    raw = {"kind": "rest", "base_url": "https://api.example.test", "streams": {stream: table}}
    issues: list[ConfigIssue] = []
    checked = validate_connector(SOURCES, "sources", "shop", raw, issues)
    assert (checked is None) == bool(issues)
    return issues


@pytest.mark.parametrize(
    ("stream", "leave_out", "key"), REQUIRED_CASES, ids=[c[2] + f"@{c[0]}" for c in REQUIRED_CASES]
)
def test_every_required_field_unmapped_is_named_by_its_key_in_the_rest_source(
    stream: Stream, leave_out: tuple[str, ...], key: str
) -> None:
    assert rest_issues(stream, rest_stream(stream, ())) == []  # the full mapping is valid
    [issue] = rest_issues(stream, rest_stream(stream, leave_out))
    assert f"streams.{stream}.{key}:" in issue.message, issue.message
    assert issue.message.count("streams.") == 1  # exactly that one problem


def files_stream(stream: Stream, leave_out: tuple[str, ...]) -> dict[str, Any]:
    table: dict[str, Any] = {
        "path": f"{stream}.jsonl",
        "default_columns": False,
        "columns": {k: v for k, v in FULL[stream].items() if k not in leave_out},
    }
    rows = ROWS_NAME.get(stream)
    if rows and rows not in leave_out:
        table["lines"] = "rows"
        table["line_columns"] = {k: v for k, v in ROWS.items() if f"{rows}.{k}" not in leave_out}
    return table


def files_issues(stream: Stream, table: dict[str, Any]) -> list[ConfigIssue]:
    raw = {"kind": "files", str(stream): table}
    issues: list[ConfigIssue] = []
    assert validate_connector(SOURCES, "sources", "shop", raw, issues) is None
    return issues


@pytest.mark.parametrize(
    ("stream", "leave_out", "key"), REQUIRED_CASES, ids=[c[2] + f"@{c[0]}" for c in REQUIRED_CASES]
)
def test_every_required_field_unmapped_is_named_by_its_key_in_the_files_source(
    stream: Stream, leave_out: tuple[str, ...], key: str
) -> None:
    FILES_MODEL[stream].model_validate(files_stream(stream, ()))  # the full mapping is valid
    files_key = (
        key.replace("fields.", "columns.", 1)
        if key.startswith("fields.")
        else "line_columns." + key.rsplit(".", maxsplit=1)[-1]
    )
    [issue] = files_issues(stream, files_stream(stream, leave_out))
    assert issue.key == f"sources.shop.{stream}"
    assert issue.message.startswith(f"{files_key}:"), issue.message


def test_the_required_tables_cover_every_stream_and_row() -> None:
    covered = {(stream, key.split(".")[0]) for stream, _, key in REQUIRED_CASES}
    assert {stream for stream, _ in covered} == set(FIELDS)
    assert {stream for stream, part in covered if part in ("lines", "items")} == set(ROW_FIELDS)


# --- what else run would fail on ----------------------------------------------------------

KEYS = MappingKeys.nested("streams.orders")
ORDER = {**FULL[Stream.ORDERS]}


@pytest.mark.parametrize(
    ("fields", "rows", "key", "words"),
    [
        ({"status": {"const": "payed"}}, None, "fields.status.const", "unknown order status"),
        ({"currency": {"default": "TL"}}, None, "fields.currency.default", "ISO 4217"),
        (
            {"status": {"path": "s", "map": {"x": "lost"}}},
            None,
            "fields.status.map.x",
            "unknown order status",
        ),
        (
            {"placed_at": {"path": "at", "format": "%d.%Q"}},
            None,
            "fields.placed_at.format",
            "bad directive",
        ),
        ({"email": {"path": "mail", "format": "%d"}}, None, "fields.email.format", "only dates"),
        ({"email": {"path": "mail", "per": "q"}}, None, "fields.email", "amounts only"),
        ({"external_id": {"const": "1"}}, None, "fields.external_id", "cannot be a constant"),
        ({"shipping": "cargo"}, None, "fields.shipping", "only to compute a total"),
        ({"colour": "c"}, None, "fields.colour", "not a canonical field"),
        ({"email": "a[b"}, None, "fields.email", "invalid path"),
        (
            {},
            RowsSpec(path="x", fields={"quantity": "q", "unit_price": "p", "size": "s"}),
            "lines.fields.size",
            "not a canonical",
        ),
        ({"total": {"path": "t", "const": "1"}}, None, "fields.total", "const replaces path"),
    ],
)
def test_a_mapping_run_could_not_use_is_a_config_error_under_its_key(
    fields: dict[str, Any], rows: RowsSpec | None, key: str, words: str
) -> None:
    issues = mapping_issues(Stream.ORDERS, {**ORDER, **fields}, rows, keys=KEYS)
    found = {issue.key: issue.message for issue in issues}
    assert f"streams.orders.{key}" in found, found
    assert words in found[f"streams.orders.{key}"]


def test_customer_consent_time_without_its_state_and_rows_on_customers() -> None:
    keys = MappingKeys.nested("streams.customers")
    fields = {"external_id": "id", "sms_consent_at": "t"}
    rows = RowsSpec(path="x", fields={})
    issues = {i.key for i in mapping_issues(Stream.CUSTOMERS, fields, rows, keys=keys)}
    assert issues == {"streams.customers.fields.sms_consent_at", "streams.customers.lines.path"}


def test_lines_on_a_rest_carts_stream_and_items_on_orders_are_named() -> None:
    carts = {**rest_stream(Stream.CARTS, ()), "lines": {"path": "x", "fields": ROWS}}
    [issue] = rest_issues(Stream.CARTS, carts)
    assert "streams.carts.lines: not used by the carts stream" in issue.message


def test_check_fails_on_an_orders_stream_mapping_neither_email_nor_customer_id(
    tmp_path: Path,
) -> None:
    """The crash of issue 9, caught by `crmsync check` with the key to change."""
    (tmp_path / "orders.jsonl").write_text("", encoding="utf-8")
    config = tmp_path / "crmsync.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{tmp_path / "state.db"}"

[sources.shop]
kind = "files"
[sources.shop.orders]
path = "orders.jsonl"
columns = {{ email = "", customer_external_id = "" }}
""",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["check", "--offline", "--config", str(config)])
    assert result.exit_code != 0
    output = result.stdout + result.stderr
    assert "sources.shop.orders" in output and "columns.email" in output, output
    assert "neither email nor customer_external_id" in output


def test_a_source_can_require_more_fields_such_as_updated_at() -> None:
    """The SQL source pages on updated_at: it requires it mapped, and a row without it
    is quarantined as a row with an invalid required field."""
    keys = MappingKeys.nested("streams.customers")
    [issue] = mapping_issues(
        Stream.CUSTOMERS, {"external_id": "id"}, keys=keys, require=["updated_at"]
    )
    assert issue.key == "streams.customers.fields.updated_at"
    builder = compile_stream(
        Stream.CUSTOMERS,
        {"external_id": "id", "updated_at": "u"},
        keys=keys,
        require=["updated_at"],
    )
    [quarantined] = builder.outcome({"id": 1, "u": None})
    assert isinstance(quarantined, RecordIssue) and quarantined.field == "updated_at"
    assert "required" in quarantined.reason
