"""`check` catches what `run` would trip on, and says where each problem came from.

Strict types (no quoted numbers or booleans from the file, while environment overrides,
text by nature, still convert), the file and line of each key, the variable behind an
override, one message per root cause, a dry read of each stream's first records, the
state URL, segment rules that would overflow or exhaust the stack, and the Mailchimp
401 hint naming the variable the configuration reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from connectors.mailchimp import MailchimpConfig, MailchimpDestination
from crmsync.contract import ConnectorContext
from crmsync.errors import ConfigError, ConfigIssue, StateError
from crmsync.fields import catalogue
from crmsync.provenance import line_of, toml_lines
from crmsync.segments import RuleError, compile_rule
from crmsync.segments.parser import MAX_DEPTH
from engine.resolve import load_config
from state.store import Store
from tests.fakes.mailchimp import FakeMailchimp, mailchimp_fake

__all__ = ["mailchimp_fake"]

ROOT = Path(__file__).resolve().parent.parent

CONFIG = f"""
[state]
url = "sqlite:///state.db"

[sources.shop]
kind = "files"
[sources.shop.customers]
path = "{ROOT}/sample_data/customers.csv"
[sources.shop.customers.columns]
external_id = "customer_id"
region = "district"
[sources.shop.orders]
path = "{ROOT}/sample_data/orders.jsonl"
lines = "line_items"
[sources.shop.orders.columns]
placed_at = "created_at"
total = "total_price"
[sources.shop.orders.line_columns]
product = "title"
unit_price = "price"

[destinations.out]
kind = "outbox"
directory = "outbox"
batch_size = 100

[pipelines.p]
sources = ["shop"]
destinations = ["out"]
"""


def write(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "crmsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


def issues(tmp_path: Path, text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return list(caught.value.issues)


def test_numbers_and_booleans_written_as_text_are_refused(tmp_path: Path) -> None:
    text = 'default_segments = "no"' + CONFIG.replace("batch_size = 100", 'batch_size = "100"')
    found = {issue.key: issue for issue in issues(tmp_path, text)}
    assert set(found) == {"destinations.out.batch_size", "default_segments"}
    assert "got the text '100'" in found["destinations.out.batch_size"].message
    assert found["destinations.out.batch_size"].where == "crmsync.toml:25"
    assert "true or false" in found["default_segments"].message


def test_a_float_for_an_integer_is_refused_but_an_integer_for_a_float_is_fine(
    tmp_path: Path,
) -> None:
    text = CONFIG.replace("batch_size = 100", "batch_size = 100.0")
    [issue] = issues(tmp_path, text + "[pipelines.p.profile]\nabandoned_cart_hours = 4\n")
    assert issue.key == "destinations.out.batch_size"


def test_environment_overrides_are_text_and_still_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_DESTINATIONS__OUT__BATCH_SIZE", "7")
    monkeypatch.setenv("CRMSYNC_PIPELINES__P__MAX_ATTEMPTS", "3")
    config = load_config(write(tmp_path))
    assert config.destinations["out"].config.batch_size == 7
    assert config.pipelines["p"].settings.max_attempts == 3


def test_an_error_from_an_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_DESTINATIONS__OUT__BATCH_SIZE", "0")
    [issue] = issues(tmp_path, CONFIG)
    assert issue.key == "destinations.out.batch_size"
    assert issue.where == "from CRMSYNC_DESTINATIONS__OUT__BATCH_SIZE"


def test_an_override_naming_no_key_gets_the_closest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_DEFAULTS__REGOIN", "DE")
    monkeypatch.setenv("CRMSYNC_TEST_SOMETHING_ELSE", "other tools share the prefix")
    [issue] = issues(tmp_path, CONFIG)
    assert issue.key == "CRMSYNC_DEFAULTS__REGOIN"
    assert "did you mean CRMSYNC_DEFAULTS__REGION?" in issue.hint


def test_region_currency_and_zone_are_checked_where_they_are_written(tmp_path: Path) -> None:
    text = CONFIG + '[defaults]\nregion = "Germany"\ncurrency = "euro"\ntimezone = "CET+1"\n'
    found = {issue.key: issue for issue in issues(tmp_path, text)}
    assert set(found) == {"defaults.region", "defaults.currency", "defaults.timezone"}
    assert "did you mean 'DE'?" in found["defaults.region"].message
    assert found["defaults.currency"].where == "crmsync.toml:32"


def test_region_and_currency_codes_are_read_in_any_case(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CONFIG + '[defaults]\nregion = "de"\ncurrency = "eur"\n'))
    assert config.settings.defaults.region == "DE"
    assert config.pipelines["p"].currency == "EUR"


def test_an_unset_variable_is_one_message_not_also_its_knock_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRMSYNC_TEST_UNSET_KEY", raising=False)
    text = CONFIG.replace('destinations = ["out"]', 'destinations = ["out", "mc"]') + (
        '[destinations.mc]\nkind = "mailchimp"\napi_key = "${CRMSYNC_TEST_UNSET_KEY}"\n'
        'list_id = "abc"\n'
    )
    [issue] = issues(tmp_path, text)
    assert issue.key == "destinations.mc.api_key"
    assert "CRMSYNC_TEST_UNSET_KEY is not set" in issue.message


def test_a_connector_validator_error_is_keyed_under_its_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_TEST_MC_KEY", "0123456789abcdef")  # no data centre
    text = CONFIG + '[destinations.mc]\nkind = "mailchimp"\napi_key = "${CRMSYNC_TEST_MC_KEY}"\n'
    text += 'list_id = "abc"\n'
    [issue] = issues(tmp_path, text)
    assert issue.key == "destinations.mc.api_key" and "data-centre" in issue.message
    assert "0123456789abcdef" not in str(issue)


def test_toml_lines_follow_tables_dotted_keys_and_skip_multiline_strings() -> None:
    text = (
        'a = 1\n[t]\nx.y = 2\ns = """\nfake = 3\n"""\n[[arr]]\n"q.k" = 4\n'
        "[t.sub]  # note\nz = { inline = 1 }\n"
    )
    lines = toml_lines(text)
    assert lines["a"] == 1 and lines["t"] == 2 and lines["t.x.y"] == 3
    assert "t.fake" not in lines and lines["arr.q.k"] == 8
    assert lines["t.sub.z"] == 10
    assert line_of("t.sub.z.inline", lines) == (10, False)
    assert line_of("t.x.y", lines) == (3, True)


def test_check_warns_when_a_sample_would_mostly_be_quarantined(tmp_path: Path) -> None:
    broken = CONFIG.replace('placed_at = "created_at"', 'placed_at = "email"')
    result = CliRunner().invoke(
        main, ["check", "--offline", "--config", str(write(tmp_path, broken))]
    )
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.output.splitlines() if "[WARN]" in line]
    assert "orders: first 200 record(s), 200 quarantined" in warning
    assert "unparseable date/time" in warning
    assert "a run would quarantine most orders" in result.output


def test_check_samples_a_good_mapping_without_warning(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--offline", "--config", str(write(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "[WARN]" not in result.output
    assert "customers: first 200 record(s)" in result.output
    assert "orders: first 200 record(s), 0 quarantined" in result.output


def test_check_fails_on_a_mapping_a_run_could_not_read(tmp_path: Path) -> None:
    broken = CONFIG.replace('external_id = "customer_id"', 'external_id = "nope"')
    result = CliRunner().invoke(
        main, ["check", "--offline", "--config", str(write(tmp_path, broken))]
    )
    assert result.exit_code == 2
    assert "[FAIL]" in result.output and "columns.external_id" in result.output


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u:pw@h/db", "use sqlite:///"),
        ("postgres://u:pw@h/db", "postgresql:// instead of postgres://"),
        ("not a url", "not a database URL"),
    ],
)
def test_a_state_url_that_cannot_open_names_state_url(url: str, words: str) -> None:
    with pytest.raises(StateError) as caught:
        Store(url)
    assert "(state.url)" in str(caught.value) and words in str(caught.value)
    assert "pw" not in str(caught.value)


def test_rules_nested_too_deeply_are_refused_with_a_caret() -> None:
    fields = catalogue()
    assert compile_rule("(" * MAX_DEPTH + "true" + ")" * MAX_DEPTH, fields)
    with pytest.raises(RuleError) as caught:
        compile_rule("(" * 2000 + "true" + ")" * 2000, fields)
    assert caught.value.position == MAX_DEPTH
    assert "nests more than" in str(caught.value) and "^" in str(caught.value)
    with pytest.raises(RuleError):
        compile_rule("not " * 2000 + "true", fields)
    with pytest.raises(RuleError):
        compile_rule("- " * 2000 + "1 < 2", fields)


def test_a_long_flat_chain_of_or_is_not_nesting() -> None:
    rule = " or ".join(f"orders_count == {n}" for n in range(1500))
    decide = compile_rule(rule, catalogue())
    assert decide({"orders_count": 1499}, datetime.now(UTC)) is True


def test_durations_out_of_range_are_refused_at_compile_and_null_at_run() -> None:
    fields = catalogue()
    with pytest.raises(RuleError) as caught:
        compile_rule("days(99999999999999) < now", fields)
    assert caught.value.position == len("days(")
    with pytest.raises(RuleError, match="out of range"):
        compile_rule("datetime('9999-12-01T00:00:00Z') + days(3000) < now", fields)
    late = compile_rule("last_order_at + days(3650000) > now", fields)
    last = datetime(2024, 1, 1, tzinfo=UTC)
    assert late({"last_order_at": last}, datetime.now(UTC)) is False  # overflow is null


def test_the_mailchimp_401_hint_names_the_variable_the_config_reads(
    mailchimp_fake: FakeMailchimp,
) -> None:
    raw = mailchimp_fake.destination_config(api_key="f" * 32 + "-us7")
    config = MailchimpConfig.model_validate(raw, context={"variables": {"api_key": "SHOP_MC"}})
    destination = MailchimpDestination(config, ConnectorContext("news", Path(".")))
    try:
        checks = destination.check()
    finally:
        destination.close()
    assert not checks[-1].ok
    assert "check the environment variable SHOP_MC" in checks[-1].detail
    assert "MAILCHIMP_API_KEY" not in checks[-1].detail


def test_a_source_phone_region_is_checked_like_the_default_one(tmp_path: Path) -> None:
    text = CONFIG + (
        '[sources.woo]\nkind = "rest"\npreset = "woocommerce"\n'
        'base_url = "https://shop.example.com"\nphone_region = "Turkey"\n'
        '[sources.woo.auth]\nusername = "ck"\npassword = "cs"\n'
    )
    [issue] = issues(tmp_path, text)
    assert issue.key == "sources.woo.phone_region"
    assert "did you mean 'TR'?" in issue.message
