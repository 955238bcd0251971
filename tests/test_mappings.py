"""Behaviour of mapping files: validation, every type and transform, stability, tags."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from connectors.mailchimp.mapping_rules import MAILCHIMP_MERGE_TYPES, check_mapping
from crmsync.contract import FieldSpec
from crmsync.errors import ConfigError, RecordError
from crmsync.fields import catalogue
from crmsync.registry import default_mapping
from mappings import (
    CompiledMapping,
    MappingError,
    compile_mapping,
    load_mapping,
)

FIELDS = catalogue()

HEAD = """
kind = "test"
identity = { email = "email" }
"""


def mapping(body: str, head: str = HEAD) -> CompiledMapping:
    return compiled(tomllib.loads(head + body))


def compiled(data: Mapping[str, object], kind: str | None = None) -> CompiledMapping:
    """Compiles as the configuration does: a Mailchimp mapping with Mailchimp's own rules."""
    rules = check_mapping if data.get("kind") == "mailchimp" or kind == "mailchimp" else None
    return compile_mapping(data, FIELDS, kind=kind, rules=rules)


def one(body: str, profile: Mapping[str, object], head: str = HEAD) -> object:
    """The value of the only field, X, for ``profile``."""
    return mapping("[fields.X]\n" + body, head).apply(profile)["X"]


def issues_of(text: str) -> list[str]:
    with pytest.raises(MappingError) as info:
        compiled(tomllib.loads(text))
    return [str(issue) for issue in info.value.issues]


def realistic_profile() -> dict[str, object]:
    """A profile as the merge step builds it: every catalogue key present."""
    values: dict[str, object] = {
        "person_key": "e:ayse.isik@example.com",
        "email": "ayse.isik@example.com",
        "phone": "+905321234567",
        "first_name": "ayşe",
        "last_name": "IŞIK",
        "full_name": "Ayşe Işık",
        "city": "istanbul",
        "region": "İstanbul",
        "country": "TR",
        "postal_code": "34710",
        "address1": "Bağdat Caddesi No: 1",
        "language": "tr",
        "birthday": date(1990, 2, 3),
        "birthday_month": 2,
        "birthday_day": 3,
        "customer_since": datetime(2023, 5, 1, 9, 15, 30, 250000, tzinfo=UTC),
        "sources": ("store_tr",),
        "orders_count": 4,
        "cancelled_orders": 1,
        "total_spent": Decimal("1234.505"),
        "currency": "TRY",
        "first_order_at": datetime(2023, 12, 31, 22, 30, tzinfo=UTC),
        "last_order_at": datetime(2025, 6, 1, 10, 0, tzinfo=UTC),
        "days_since_last_order": 14,
        "avg_order_value": Decimal("308.62625"),
        "discounted_orders": 1,
        "full_price_orders": 3,
        "categories": ("Kitap", "Oyuncak"),
        "top_category": "Kitap",
        "cart_open": True,
        "cart_abandoned": True,
        "cart_value": Decimal("99.90"),
        "cart_items": 2,
        "cart_url": "https://shop.example.com/cart/abc",
        "cart_updated_at": datetime(2025, 6, 10, 8, 0, tzinfo=UTC),
        "rfm_recency": 5,
        "rfm_frequency": 4,
        "rfm_monetary": 5,
        "rfm_score": "545",
        "rfm_label": "champions",
        "lifecycle_stage": "active",
        "email_consent": "subscribed",
        "email_consent_at": datetime(2023, 5, 1, tzinfo=UTC),
        "sms_consent": "none",
        "sms_consent_at": None,
        "deleted": False,
        "spent_30d": Decimal("0"),
        "orders_30d": 0,
        "spent_90d": Decimal("120.00"),
        "orders_90d": 1,
        "spent_365d": Decimal("1000.00"),
        "orders_365d": 3,
    }
    assert set(values) == set(FIELDS)
    return values


# --- loading: every error with its key path ------------------------------------------------


def test_loading_reports_every_error_with_its_key_path() -> None:
    text = """
kind = "test"
colour = "blue"
[identity]
email = "emial"
[fields.ORDERS]
from = "order_count"
type = "integer"
[fields.SPENT]
from = "total_spnt"
type = "numbr"
[fields.CITY]
form = "city"
[fields.WHEN]
from = "last_order_at"
type = "date"
round = 2
format = "%d %B %Y"
timezone = "Mars/Olympus"
[fields.NAME]
from = "first_name"
type = "number"
[fields.TIER]
from = "rfm_label"
type = "dropdown"
map = { champions = "Champion" }
choices = ["Loyal", "Other"]
default = "Gold"
[fields.COUNT]
from = "orders_count"
type = "integer"
default = "many"
[tags]
prefix = ""
case = "camel"
"""
    assert issues_of(text) == [
        "colour: unknown key"
        " (hint: allowed: description, fields, identity, kind, locale, memberships)",
        "identity.email: unknown profile field 'emial' (did you mean 'email'?)"
        " (hint: profile fields are listed by `crmsync fields`)",
        "fields.ORDERS.from: unknown profile field 'order_count' (did you mean 'orders_count'?)"
        " (hint: profile fields are listed by `crmsync fields`)",
        "fields.SPENT.type: unknown type 'numbr' (did you mean 'number'?) (hint: use one of:"
        " text, number, integer, date, datetime, birthday, boolean, phone, address,"
        " dropdown, list)",
        "fields.SPENT.from: unknown profile field 'total_spnt' (did you mean 'total_spent'?)"
        " (hint: profile fields are listed by `crmsync fields`)",
        "fields.CITY.form: unknown key (did you mean 'format' or 'from'?)"
        " (hint: allowed: case, default, format, from, join, label, locale, map, max_length,"
        " overflow, round, timezone, type, unmapped)",
        'fields.CITY.from: missing (hint: name the profile field to read, e.g. from = "city")',
        "fields.WHEN.round: does not apply to type 'date' (hint: it applies to: number, text)",
        "fields.WHEN.format: directive %B is locale- or platform-dependent or unknown"
        " (hint: use numeric directives: %Y %m %d %H %M %S %z (and %F, %T, %j, %y, %f))",
        "fields.WHEN.timezone: unknown time zone 'Mars/Olympus'"
        ' (hint: use an IANA name such as "Europe/Istanbul")',
        "fields.NAME.from: type 'number' cannot take profile field 'first_name' (text)"
        " (hint: it takes decimal, integer fields)",
        "fields.TIER.map.champions: 'Champion' is not one of the choices",
        "fields.TIER.default: 'Gold' is not one of the choices",
        "fields.COUNT.default: expected a whole number or \"\", got 'many'",
        "tags.prefix: expected a non-empty prefix, got ''"
        " (hint: crmsync adds and removes only groups with this prefix, so it cannot be empty)",
        "tags.case: unknown case 'camel' (hint: use as_is, kebab, lower, upper, title)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[identity]\nemail = 'email'", "kind: missing or invalid"),
        ("kind = 'Mail Chimp'\n[identity]\nemail = 'email'", "kind: invalid kind 'Mail Chimp'"),
        ("kind = 'x'", "identity: missing"),
        ("kind = 'x'\n[identity]\n", "identity: names neither email nor phone"),
        ("kind = 'x'\n[identity]\nemail = 'orders_count'", "identity.email: 'orders_count' is not"),
        (HEAD + "locale = 'xx_YY'", "locale: unknown locale 'xx_YY'"),
        (HEAD + "fields = 3", "fields: expected a table"),
        (HEAD + "[fields]\nX = 'city'", "fields.X: expected a table"),
        (HEAD + "[fields.X]\nfrom = 'city'\ncase = 'shout'", "fields.X.case: unknown case 'shout'"),
        (HEAD + "[fields.X]\nfrom = 'city'\nmax_length = 0", "fields.X.max_length: expected a"),
        (HEAD + "[fields.X]\nfrom = 'city'\noverflow = 'x'", "fields.X.overflow: expected"),
        (HEAD + "[fields.X]\nfrom = 'city'\nmap = { a = 1 }", "fields.X.map.a: expected a string"),
        (HEAD + "[fields.X]\nfrom = 'city'\nformat = '%Y'", "fields.X.format: applies only to"),
        (HEAD + "[fields.X]\nfrom = 'birthday'\ntype = 'date'\ntimezone = 'UTC'", "date"),
        (HEAD + "[fields.X]\nfrom = 'city'\nround = 2", "fields.X.round: applies only to"),
        (HEAD + "[fields.X]\nfrom = 'total_spent'\ntype = 'number'\nround = 11", "from 0 to 10"),
        (HEAD + "[fields.X]\nfrom = 'city'\njoin = ';'", "fields.X.join: applies only to list"),
        (HEAD + "[fields.X]\nfrom = 'city'\nlabel = ''", "fields.X.label: expected a non-empty"),
        (HEAD + "[fields.X]\nfrom = 'cart_open'\ntype = 'boolean'\ndefault = 1", "true or false"),
        (HEAD + "[fields.X]\nfrom = 'orders_count'\ntype = 'number'\ndefault = true", "a number"),
        (HEAD + "[fields.X]\nfrom = 'last_order_at'\ntype = 'date'\nformat = 'today'", "strftime"),
        (
            HEAD + "[fields.X]\nfrom = 'rfm_label'\ntype = 'dropdown'\nchoices = ['a', 'a']",
            "choices must not repeat",
        ),
        (
            HEAD + "[fields.X]\nfrom = 'rfm_label'\ntype = 'dropdown'\nchoices = ['a']\n"
            "unmapped = 'b'",
            "fields.X.unmapped: 'b' is not one of the choices",
        ),
        (HEAD + "[fields.X]\ntype = 'address'", "fields.X.from_fields: expected a table"),
        (
            HEAD + "[fields.X]\ntype = 'address'\nfrom_fields = { street = 'address1' }",
            "fields.X.from_fields.street: unknown key",
        ),
        (
            HEAD + "[fields.X]\ntype = 'address'\nfrom_fields = { city = 'orders_count' }",
            "fields.X.from_fields.city: 'orders_count' is not a text field",
        ),
        (
            HEAD + "[fields.X]\ntype = 'address'\nfrom_fields = { city = 'city' }\n"
            "require = ['zip']",
            "fields.X.require: 'zip' is required but not in from_fields",
        ),
        (
            HEAD + "[fields.X]\ntype = 'address'\nfrom = 'city'\nfrom_fields = { city = 'city' }",
            "fields.X.from: does not apply to type 'address'",
        ),
        (HEAD + '[fields." "]\nfrom = "city"', 'fields." ": field name must be'),
        (HEAD + "[tags]\nprefix = 'crm-'\nmax_length = 5", "tags.max_length: expected a whole"),
        (HEAD + "[tags]\nsuffix = 'x'", "tags.suffix: unknown key"),
        (HEAD + "[tags.names]\nvip = 'crm-VIP'", "tags.names.vip: 'crm-VIP' already starts"),
        (HEAD + "[tags.names]\nvip = ' '", "tags.names.vip: expected a non-empty group name"),
    ],
)
def test_each_invalid_setting_is_reported_under_its_key(text: str, expected: str) -> None:
    assert any(expected in issue for issue in issues_of(text)), issues_of(text)


@pytest.mark.parametrize("type_", ["text", "date"])
def test_a_timezone_on_a_date_field_is_reported_once(type_: str) -> None:
    text = HEAD + f"[fields.B]\nfrom = 'birthday'\ntype = '{type_}'\ntimezone = 'UTC'"
    assert issues_of(text) == [
        "fields.B.timezone: applies only to datetime profile fields, not date"
    ]


def test_mailchimp_limits_are_checked_at_load() -> None:
    text = """
kind = "mailchimp"
[identity]
phone = "phone"
[fields.fname]
from = "first_name"
[fields.LASTORDERDATE]
from = "last_order_at"
type = "date"
[fields.EMAIL]
from = "email"
[fields.WHEN]
from = "last_order_at"
type = "datetime"
[fields.OPEN]
from = "cart_open"
type = "boolean"
[fields.NOTE]
from = "top_category"
max_length = 300
[fields.BDAY]
from = "birthday"
type = "birthday"
format = "%Y-%m-%d"
[fields.TIER]
from = "rfm_label"
type = "dropdown"
[fields.ADDR]
type = "address"
from_fields = { addr1 = "address1", city = "city" }
[tags]
max_length = 120
"""
    assert issues_of(text) == [
        "identity.email: Mailchimp identifies contacts by e-mail: name the field",
        "fields.fname: 'fname' is not a Mailchimp merge tag"
        " (hint: use 1-10 characters from A-Z, 0-9 and _, e.g. FNAME or LASTORDER)",
        "fields.LASTORDERDATE: 'LASTORDERDATE' is not a Mailchimp merge tag"
        " (hint: use 1-10 characters from A-Z, 0-9 and _, e.g. FNAME or LASTORDER)",
        "fields.EMAIL: EMAIL is Mailchimp's own address field"
        " (hint: crmsync sets it from [identity])",
        "memberships.max_length: Mailchimp tag names have at most 100 characters",
        "fields.WHEN.type: Mailchimp has no datetime merge fields (hint: use one of text,"
        " number, integer, date, birthday, phone, address, dropdown (a text field can show"
        " any value))",
        "fields.OPEN.type: Mailchimp has no boolean merge fields (hint: use one of text,"
        " number, integer, date, birthday, phone, address, dropdown (a text field can show"
        " any value))",
        "fields.NOTE.max_length: Mailchimp text fields hold at most 255",
        'fields.BDAY.format: Mailchimp birthdays are "%m/%d" or "%d/%m"',
        "fields.TIER.choices: Mailchimp dropdown fields need their list of choices",
        "fields.ADDR.from_fields: Mailchimp addresses need state, zip as well"
        " (hint: map addr1, city, state and zip (country is optional))",
    ]


def test_mailchimp_text_fields_are_cut_at_255_characters_by_default() -> None:
    head = 'kind = "mailchimp"\nidentity = { email = "email" }\n'
    assert one('from = "cart_url"', {"cart_url": "x" * 300}, head) == "x" * 255


def test_a_mapping_for_another_kind_is_refused() -> None:
    with pytest.raises(MappingError) as info:
        compile_mapping(tomllib.loads(HEAD), FIELDS, kind="mailchimp")
    assert [str(i) for i in info.value.issues] == [
        "kind: this mapping is for 'test', but the destination is 'mailchimp'"
    ]


def test_missing_and_malformed_files_are_mapping_errors_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(MappingError) as info:
        load_mapping(missing, FIELDS)
    assert str(missing) in str(info.value)
    assert info.value.issues[0].message == "file not found"
    broken = tmp_path / "broken.toml"
    broken.write_text('kind = "x"\n[fields.A\n', encoding="utf-8")
    with pytest.raises(MappingError) as info:
        load_mapping(broken, FIELDS)
    assert "not valid TOML" in str(info.value)
    assert "line 2" in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_default_mappings_come_from_the_destination_class() -> None:
    assert default_mapping("outbox").name == "mapping.toml"
    assert tomllib.loads(default_mapping("mailchimp").read_text("utf-8"))["kind"] == "mailchimp"
    for kind in ("hubspot-ish", "../mappings/outbox", "nope"):
        with pytest.raises(ConfigError) as info:
            default_mapping(kind)
        assert f"unknown kind {kind!r}" in str(info.value)
        assert "mailchimp, outbox" in str(info.value)


# --- each type and transform ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "value", "expected"),
    [
        ('from = "city"', "Ankara", "Ankara"),
        ('from = "orders_count"', 12, "12"),
        ('from = "total_spent"', Decimal("1E+3"), "1000"),
        ('from = "total_spent"', Decimal("12.50"), "12.50"),
        ('from = "total_spent"\nround = 1', Decimal("12.25"), "12.3"),
        ('from = "orders_count"\nround = 2', 7, "7.00"),
        ('from = "cart_open"', True, "true"),
        ('from = "cart_open"', False, "false"),
        ('from = "birthday"', date(1990, 2, 3), "1990-02-03"),
        ('from = "birthday"\nformat = "%d.%m.%Y"', date(1990, 2, 3), "03.02.1990"),
        (
            'from = "last_order_at"',
            datetime(2025, 1, 1, 22, 30, 15, 999, tzinfo=UTC),
            "2025-01-01T22:30:15+00:00",
        ),
        (
            'from = "last_order_at"\ntimezone = "Europe/Istanbul"\nformat = "%F %T"',
            datetime(2025, 1, 1, 22, 30, tzinfo=UTC),
            "2025-01-02 01:30:00",
        ),
        ('from = "categories"', ("Kitap", "Oyuncak"), "Kitap, Oyuncak"),
        ('from = "categories"\njoin = "|"', ("Kitap", "Oyuncak"), "Kitap|Oyuncak"),
        ('from = "categories"', (), ""),
        ('from = "city"\ncase = "upper"', "izmir", "IZMIR"),
        ('from = "city"\ncase = "lower"', "İZMİR", "i̇zmi̇r"),
        ('from = "city"\ncase = "title"', "new YORK", "New York"),
        ('from = "city"\ncase = "title"', "o'neil-smith", "O'neil-Smith"),
        ('from = "city"\nmax_length = 3', "Ankara", "Ank"),
        ('from = "city"\nmax_length = 3\noverflow = "default"\ndefault = "?"', "Ankara", "?"),
        ('from = "city"\nmax_length = 6\noverflow = "default"', "Ankara", "Ankara"),
        ('from = "rfm_label"\nmap = { lost = "Gone" }', "lost", "Gone"),
        ('from = "rfm_label"\nmap = { lost = "Gone" }', "new", "new"),
        ('from = "rfm_label"\nmap = { lost = "Gone" }\nunmapped = "Other"', "new", "Other"),
        ('from = "rfm_label"\nmap = { lost = "gone" }\ncase = "upper"', "lost", "GONE"),
    ],
)
def test_text_fields_convert_and_transform(body: str, value: object, expected: str) -> None:
    source = body.split('"')[1]
    assert one(body, {source: value}) == expected


@pytest.mark.parametrize(
    ("body", "value", "expected"),
    [
        ('from = "total_spent"\ntype = "number"', Decimal("1234.505"), 1234.51),
        ('from = "total_spent"\ntype = "number"', Decimal("1.005"), 1.01),
        ('from = "total_spent"\ntype = "number"', Decimal("2.675"), 2.68),
        ('from = "total_spent"\ntype = "number"\nround = 1', Decimal("0.05"), 0.1),
        ('from = "total_spent"\ntype = "number"\nround = 0', Decimal("2.5"), 3),
        ('from = "total_spent"\ntype = "number"', Decimal("-0.001"), 0.0),
        ('from = "orders_count"\ntype = "number"', 7, 7),
        ('from = "orders_count"\ntype = "number"\nround = 2', 7, 7.0),
        ('from = "orders_count"\ntype = "integer"', 7, 7),
        ('from = "total_spent"\ntype = "integer"', Decimal("2.5"), 3),
        ('from = "total_spent"\ntype = "integer"', Decimal("2.49"), 2),
    ],
)
def test_numbers_are_rounded_half_up_from_the_exact_decimal(
    body: str, value: object, expected: float
) -> None:
    source = body.split('"')[1]
    out = one(body, {source: value})
    assert out == expected
    assert type(out) is type(expected)


def test_negative_zero_is_written_as_zero() -> None:
    out = one('from = "total_spent"\ntype = "number"', {"total_spent": Decimal("-0.001")})
    assert json.dumps(out) == "0.0"


@pytest.mark.parametrize(
    ("body", "value", "expected"),
    [
        (
            'from = "last_order_at"\ntype = "date"',
            datetime(2025, 1, 1, 22, 30, tzinfo=UTC),
            "2025-01-01",
        ),
        (
            'from = "last_order_at"\ntype = "date"\ntimezone = "Europe/Istanbul"',
            datetime(2025, 1, 1, 22, 30, tzinfo=UTC),
            "2025-01-02",
        ),
        ('from = "birthday"\ntype = "date"\nformat = "%d/%m/%Y"', date(1990, 2, 3), "03/02/1990"),
        ('from = "birthday"\ntype = "birthday"', date(1990, 2, 3), "02/03"),
        ('from = "birthday"\ntype = "birthday"\nformat = "%d/%m"', date(1990, 2, 3), "03/02"),
        (
            'from = "last_order_at"\ntype = "datetime"',
            datetime(2025, 1, 1, 22, 30, 1, 5, tzinfo=UTC),
            "2025-01-01T22:30:01+00:00",
        ),
        (
            'from = "last_order_at"\ntype = "datetime"\ntimezone = "Europe/Istanbul"',
            datetime(2025, 1, 1, 22, 30, tzinfo=UTC),
            "2025-01-02T01:30:00+03:00",
        ),
        (
            'from = "last_order_at"\ntype = "datetime"\nformat = "%Y%m%dT%H%M%S%z"',
            datetime(2025, 1, 1, 22, 30, tzinfo=UTC),
            "20250101T223000+0000",
        ),
        ('from = "cart_open"\ntype = "boolean"', True, True),
        ('from = "cart_open"\ntype = "boolean"', False, False),
        ('from = "phone"\ntype = "phone"', "+905321234567", "+905321234567"),
        ('from = "categories"\ntype = "list"', ("Kitap", "Oyuncak"), ["Kitap", "Oyuncak"]),
    ],
)
def test_time_boolean_phone_and_list_types(body: str, value: object, expected: object) -> None:
    source = body.split('"')[1]
    assert one(body, {source: value}) == expected


def test_day_formats_stay_right_across_many_distinct_days() -> None:
    # the per-day cache must key on the local day, not on the first value it saw
    compiled = mapping(
        '[fields.X]\nfrom = "last_order_at"\ntype = "date"\ntimezone = "Europe/Istanbul"'
    )
    for day in range(1, 31):
        late = datetime(2025, 1, day, 21, 30, tzinfo=UTC)  # 00:30 next day in Istanbul
        early = datetime(2025, 1, day, 20, 30, tzinfo=UTC)  # 23:30 the same day
        assert compiled.apply({"last_order_at": late})["X"] == f"2025-01-{day + 1:02d}"
        assert compiled.apply({"last_order_at": early})["X"] == f"2025-01-{day:02d}"


DROPDOWN = """
from = "rfm_label"
type = "dropdown"
map = { champions = "Champion", loyal = "Loyal" }
choices = ["Champion", "Loyal", "Other"]
"""


@pytest.mark.parametrize(
    ("extra", "value", "expected"),
    [
        ("", "champions", "Champion"),
        ("", "Other", "Other"),
        ("", "lost", None),
        ('default = "Other"', "lost", "Other"),
        ('default = ""', "lost", ""),
        ('unmapped = "Other"', "lost", "Other"),
        ('unmapped = "Other"', "Loyal", "Other"),
        ('default = "Other"', None, "Other"),
    ],
)
def test_dropdowns_map_values_and_never_send_a_non_choice(
    extra: str, value: object, expected: object
) -> None:
    assert one(DROPDOWN + extra, {"rfm_label": value}) == expected


def test_dropdown_from_integer_and_boolean_fields() -> None:
    body = 'from = "rfm_recency"\ntype = "dropdown"\nmap = { 5 = "Hot", 1 = "Cold" }'
    assert one(body, {"rfm_recency": 5}) == "Hot"
    assert one(body, {"rfm_recency": 3}) == "3"
    body = 'from = "cart_open"\ntype = "dropdown"\nmap = { true = "Yes", false = "No" }'
    assert one(body, {"cart_open": False}) == "No"


ADDRESS = """
type = "address"
from_fields = { addr1 = "address1", city = "city", state = "region", zip = "postal_code", \
country = "country" }
"""


def test_address_is_a_dict_of_parts_with_empty_strings_for_missing_ones() -> None:
    person = {"address1": "Bağdat Cd. 1", "city": "İstanbul", "region": "İstanbul"}
    assert one(ADDRESS, person) == {
        "addr1": "Bağdat Cd. 1",
        "city": "İstanbul",
        "state": "İstanbul",
        "zip": "",
        "country": "",
    }
    assert one(ADDRESS, {}) is None
    assert one(ADDRESS + 'default = ""', {}) == ""


def test_incomplete_address_falls_back_to_the_default_when_parts_are_required() -> None:
    body = ADDRESS + 'require = ["addr1", "zip"]\ndefault = ""'
    assert one(body, {"address1": "Bağdat Cd. 1", "city": "İstanbul"}) == ""
    full = {"address1": "Bağdat Cd. 1", "postal_code": "34710"}
    assert one(body, full) == {
        "addr1": "Bağdat Cd. 1",
        "city": "",
        "state": "",
        "zip": "34710",
        "country": "",
    }


def test_mailchimp_addresses_require_addr1_city_state_and_zip() -> None:
    head = 'kind = "mailchimp"\nidentity = { email = "email" }\n'
    body = ADDRESS + 'default = ""'
    incomplete = {"address1": "Bağdat Cd. 1", "city": "İstanbul", "region": "İstanbul"}
    assert one(body, incomplete, head) == ""
    assert one(body, incomplete | {"postal_code": "34710"}, head) == {
        "addr1": "Bağdat Cd. 1",
        "city": "İstanbul",
        "state": "İstanbul",
        "zip": "34710",
        "country": "",
    }


def test_null_values_become_the_default_or_json_null() -> None:
    compiled = mapping(
        """
[fields.A]
from = "city"
default = ""
[fields.B]
from = "city"
[fields.C]
from = "avg_order_value"
type = "number"
default = 0
[fields.D]
from = "categories"
type = "list"
default = ["none"]
[fields.E]
from = "city"
case = "upper"
default = "unknown"
"""
    )
    out = compiled.apply({"city": None})
    assert out == {"A": "", "B": None, "C": 0, "D": ["none"], "E": "unknown"}
    out["D"].append("changed")  # type: ignore[attr-defined]
    assert compiled.apply({})["D"] == ["none"]


EVERY_KIND = """
locale = "tr"
[fields.'quote"d \\ name']
from = "city"
[fields."şehir adı"]
from = "city"
case = "title"
max_length = 5
[fields.SHORT_OR_NOTHING]
from = "city"
max_length = 3
overflow = "default"
default = "?"
[fields.MAPPED]
from = "lifecycle_stage"
map = { active = "Aktif" }
unmapped = "Diğer"
[fields.CHOICE]
from = "rfm_label"
type = "dropdown"
choices = ["champions", "loyal"]
[fields.CHOICE_FROM_BOOL]
from = "cart_open"
type = "dropdown"
[fields.SPENT]
from = "total_spent"
type = "number"
[fields.SPENT_INT]
from = "total_spent"
type = "integer"
[fields.COUNT_AS_NUMBER]
from = "orders_count"
type = "number"
round = 1
[fields.COUNT_TEXT]
from = "orders_count"
type = "text"
round = 2
[fields.SPENT_TEXT]
from = "avg_order_value"
type = "text"
[fields.WHEN_LOCAL]
from = "customer_since"
type = "datetime"
timezone = "Europe/Istanbul"
[fields.WHEN_DAY]
from = "customer_since"
type = "date"
format = "%d.%m.%Y"
[fields.WHEN_TEXT]
from = "first_order_at"
type = "text"
format = "%Y-%m-%d %H:%M"
[fields.BIRTHDAY]
from = "birthday"
type = "birthday"
[fields.FLAG]
from = "cart_abandoned"
type = "boolean"
[fields.FLAG_TEXT]
from = "cart_open"
type = "text"
[fields.TAGS]
from = "categories"
type = "list"
default = []
[fields.TAGS_TEXT]
from = "categories"
type = "text"
join = " | "
[fields.PHONE]
from = "phone"
type = "phone"
[fields.ADDRESS]
type = "address"
from_fields = { addr1 = "address1", city = "city", zip = "postal_code" }
require = ["addr1"]
"""


@pytest.mark.parametrize("text", ["builtin:outbox", "builtin:mailchimp", EVERY_KIND])
def test_the_composed_apply_gives_what_each_fields_closure_gives(text: str) -> None:
    """``apply`` is one generated function; each field's closure is the reference."""
    from mappings.convert import compile_field

    if text.startswith("builtin:"):
        data = tomllib.loads(default_mapping(text.split(":")[1]).read_text("utf-8"))
    else:
        data = tomllib.loads(HEAD + text)
    compiled = compile_mapping(data, FIELDS)
    rules = {rule.name: rule for rule in compiled.rules}
    full = realistic_profile()
    variants = [full, {}, dict.fromkeys(full), full | {"city": "ANKARA"}]
    variants += [full | {"customer_since": datetime(2024, 1, 1, 21, 30, 5, tzinfo=UTC)}]
    variants += [full | {"rfm_label": "loyal", "cart_open": False, "categories": ()}]
    for profile in variants:
        out = compiled.apply(profile)
        assert list(out) == sorted(rules)
        for name, rule in rules.items():
            assert out[name] == compile_field(rule)(profile), (name, profile.get(rule.source))


def test_a_wrongly_typed_profile_value_is_a_record_error_naming_the_field() -> None:
    compiled = mapping('[fields.SPENT]\nfrom = "total_spent"\ntype = "number"')
    with pytest.raises(RecordError) as info:
        compiled.apply({"total_spent": "a lot"})
    assert info.value.field == "SPENT"


# --- Turkish case handling ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "locale", "value", "expected"),
    [
        ("title", "tr", "istanbul", "İstanbul"),
        ("title", "tr", "İSTANBUL", "İstanbul"),
        ("title", "tr", "istanbul'da", "İstanbul'da"),
        ("title", "tr", "ırmak ILGAZ", "Irmak Ilgaz"),
        ("title", "tr_TR", "şişli", "Şişli"),
        ("lower", "tr", "IŞIK", "ışık"),
        ("lower", "tr", "İZMİR", "izmir"),
        ("upper", "tr", "iğdır", "İĞDIR"),
        ("upper", "az", "bakı", "BAKI"),
        ("title", "en", "istanbul", "Istanbul"),
        ("lower", "en", "IŞIK", "işik"),
        ("upper", None, "iğdır", "IĞDIR"),
    ],
)
def test_case_follows_the_locale(case: str, locale: str | None, value: str, expected: str) -> None:
    body = f'from = "city"\ncase = "{case}"\n' + (f'locale = "{locale}"\n' if locale else "")
    assert one(body, {"city": value}) == expected


def test_mapping_level_locale_applies_to_every_field_and_fields_can_override_it() -> None:
    compiled = mapping(
        """
locale = "tr"
[fields.A]
from = "city"
case = "title"
[fields.B]
from = "city"
case = "title"
locale = "en"
"""
    )
    assert compiled.apply({"city": "izmir"}) == {"A": "İzmir", "B": "Izmir"}


# --- stability ------------------------------------------------------------------------------


def test_same_profile_gives_byte_identical_payloads_whatever_the_key_order() -> None:
    compiled = load_mapping(default_mapping("outbox"), FIELDS)
    first = realistic_profile()
    second = dict(reversed(list(realistic_profile().items())))
    a, b = compiled.apply(first), compiled.apply(second)
    assert list(a) == sorted(a)
    assert orjson.dumps(a) == orjson.dumps(b)
    assert json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)
    assert orjson.dumps(compiled.apply(first)) == orjson.dumps(a)


def test_payload_changes_only_when_a_mapped_value_changes() -> None:
    compiled = load_mapping(default_mapping("outbox"), FIELDS)
    person = realistic_profile()
    before = orjson.dumps(compiled.apply(person))
    assert orjson.dumps(compiled.apply(person | {"days_since_last_order": 15})) == before
    assert orjson.dumps(compiled.apply(person | {"orders_count": 5})) != before


def test_outputs_are_plain_json_values() -> None:
    for kind in ("outbox", "mailchimp"):
        payload = load_mapping(default_mapping(kind), FIELDS).apply(realistic_profile())
        assert json.loads(json.dumps(payload)) == payload


# --- tags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "segment", "expected"),
    [
        ("kebab", "birthday_this_month", "crm-birthday-this-month"),
        ("kebab", "cartAbandoners", "crm-cart-abandoners"),
        ("kebab", "VIPCustomers", "crm-vip-customers"),
        ("kebab", "at-risk", "crm-at-risk"),
        ("as_is", "birthday_this_month", "crm-birthday_this_month"),
        ("lower", "Only_Discount", "crm-only_discount"),
        ("upper", "only_discount", "crm-ONLY_DISCOUNT"),
        ("title", "only_discount", "crm-Only Discount"),
    ],
)
def test_segment_names_become_prefixed_tags(case: str, segment: str, expected: str) -> None:
    compiled = mapping(f'[tags]\nprefix = "crm-"\ncase = "{case}"')
    assert compiled.membership_for(segment) == expected
    assert compiled.owns(expected)


def test_explicit_tag_names_keep_their_spelling_and_get_the_prefix() -> None:
    compiled = mapping('[tags]\nprefix = "crm-"\n[tags.names]\nvip = "VIP"')
    assert compiled.membership_for("vip") == "crm-VIP"
    assert compiled.membership_for("repeat") == "crm-repeat"


def test_tags_use_the_mapping_locale() -> None:
    compiled = mapping('locale = "tr"\n[tags]\ncase = "upper"')
    assert compiled.membership_for("sadık_müşteri") == "crm-SADIK_MÜŞTERİ"


def test_long_tag_names_are_cut_to_the_limit_and_stay_distinct() -> None:
    compiled = mapping('[tags]\nprefix = "crm-"\nmax_length = 24')
    a = compiled.membership_for("customers_who_bought_books_last_year")
    b = compiled.membership_for("customers_who_bought_books_this_year")
    assert len(a) == len(b) == 24
    assert a != b
    assert a.startswith("crm-customers-w")
    assert a == compiled.membership_for("customers_who_bought_books_last_year")
    again = mapping('[tags]\nprefix = "crm-"\nmax_length = 24')
    assert again.membership_for("customers_who_bought_books_last_year") == a
    assert compiled.membership_for("short") == "crm-short"


def test_memberships_for_is_sorted_and_deduplicated() -> None:
    compiled = mapping('[tags.names]\nbig = "vip"')
    assert compiled.memberships_for(["vip", "repeat", "big", "at_risk"]) == (
        "crm-at-risk",
        "crm-repeat",
        "crm-vip",
    )
    assert compiled.memberships_for([]) == ()


def test_only_tags_with_the_prefix_are_owned() -> None:
    compiled = mapping('[tags]\nprefix = "crm-"')
    assert compiled.owns("crm-vip")
    assert not compiled.owns("vip")
    assert not compiled.owns("CRM-vip")
    assert not compiled.owns("newsletter-crm-")
    assert compiled.prefix == "crm-"


def test_tags_default_to_the_crm_prefix_and_kebab_case() -> None:
    compiled = mapping("")
    assert compiled.membership_for("only_discount") == "crm-only-discount"


# --- the shipped mappings -------------------------------------------------------------------


def test_shipped_mailchimp_mapping_applies_to_a_realistic_profile() -> None:
    compiled = load_mapping(default_mapping("mailchimp"), FIELDS, kind="mailchimp")
    assert compiled.kind == "mailchimp"
    assert (compiled.identity_email, compiled.identity_phone) == ("email", None)
    assert compiled.apply(realistic_profile()) == {
        "ADDRESS": {
            "addr1": "Bağdat Caddesi No: 1",
            "city": "istanbul",
            "state": "İstanbul",
            "zip": "34710",
            "country": "TR",
        },
        "AOV": 308.63,
        "BIRTHDAY": "02/03",
        "CARTURL": "https://shop.example.com/cart/abc",
        "CARTVAL": 99.9,
        "FIRSTORDER": "2024-01-01",  # 22:30 UTC on 31 December is 1 January in Istanbul
        "FNAME": "Ayşe",
        "LASTORDER": "2025-06-01",
        "LNAME": "Işık",
        "ORDERS": 4,
        "PHONE": "+905321234567",
        "RFM": "Champions",
        "SPENT": 1234.51,
        "STAGE": "Active",
        "TOPCAT": "Kitap",
    }
    assert compiled.memberships_for(["vip", "birthday_this_month"]) == (
        "crm-VIP",
        "crm-birthday-this-month",
    )


def test_shipped_mailchimp_mapping_clears_fields_for_an_empty_profile() -> None:
    compiled = load_mapping(default_mapping("mailchimp"), FIELDS)
    bare = {name: None for name in FIELDS}
    assert set(compiled.apply(bare).values()) == {""}


def test_shipped_mailchimp_field_specs_fit_mailchimp() -> None:
    compiled = load_mapping(default_mapping("mailchimp"), FIELDS)
    specs = {spec.name: spec for spec in compiled.field_specs()}
    assert list(specs) == sorted(specs)
    assert set(specs) == {
        "FNAME", "LNAME", "PHONE", "BIRTHDAY", "ADDRESS", "ORDERS", "SPENT", "AOV",
        "FIRSTORDER", "LASTORDER", "TOPCAT", "CARTVAL", "CARTURL", "RFM", "STAGE",
    }  # fmt: skip
    assert all(len(name) <= 10 for name in specs)
    assert {MAILCHIMP_MERGE_TYPES[spec.type] for spec in specs.values()} <= {
        "text", "number", "address", "phone", "date", "birthday", "dropdown",
    }  # fmt: skip
    assert specs["RFM"] == FieldSpec(
        name="RFM",
        type="dropdown",
        label="RFM Segment",
        choices=(
            "Champions", "Loyal", "Potential", "New", "At Risk", "Hibernating", "Lost", "None",
        ),
    )  # fmt: skip
    assert specs["ORDERS"].type == "integer"
    assert MAILCHIMP_MERGE_TYPES["integer"] == "number"


def test_shipped_outbox_mapping_covers_stable_profile_fields_only() -> None:
    compiled = load_mapping(default_mapping("outbox"), FIELDS, kind="outbox")
    payload = compiled.apply(realistic_profile())
    assert "days_since_last_order" not in payload
    for name in ("first_name", "email", "phone", "city", "country", "birthday", "orders_count",
                 "total_spent", "first_order_at", "last_order_at", "avg_order_value",
                 "spent_30d", "spent_90d", "spent_365d", "top_category", "cart_value",
                 "cart_url", "rfm_label", "lifecycle_stage"):  # fmt: skip
        assert name in payload
    assert payload["total_spent"] == 1234.51
    assert payload["customer_since"] == "2023-05-01T09:15:30+00:00"
    assert payload["categories"] == ["Kitap", "Oyuncak"]
    assert payload["birthday"] == "1990-02-03"
    assert payload["first_name"] == "ayşe"  # the outbox keeps values as they are
    assert compiled.profile_fields_used <= set(FIELDS)
    assert "days_since_last_order" not in compiled.profile_fields_used
    assert (compiled.identity_email, compiled.identity_phone) == ("email", "phone")


def test_profile_fields_used_lists_every_field_read() -> None:
    compiled = mapping(
        """
[fields.A]
from = "city"
[fields.ADDR]
type = "address"
from_fields = { addr1 = "address1", zip = "postal_code" }
"""
    )
    assert compiled.profile_fields_used == frozenset({"email", "city", "address1", "postal_code"})


def test_the_complete_example_in_the_readme_loads_and_applies() -> None:
    readme = (Path(__file__).parents[1] / "mappings" / "README.md").read_text("utf-8")
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    result = compiled(tomllib.loads(example), kind="mailchimp")
    payload = result.apply(realistic_profile() | {"rfm_label": "lost"})
    assert payload["RFM"] == "Other"
    assert payload["FNAME"] == "Ayşe"
    assert payload["LASTORDER"] == "2025-06-01"
    assert result.membership_for("vip") == "crm-VIP"
