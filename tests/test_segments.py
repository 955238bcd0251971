"""Behaviour of the segment rule language: operators, nulls, types, errors, defaults, safety."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from crmsync.errors import ConfigError, CrmsyncError
from crmsync.fields import ProfileField, catalogue
from crmsync.segments import (
    DEFAULT_SEGMENTS,
    RuleError,
    SegmentErrors,
    SegmentSet,
    compile_rule,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
FIELDS = catalogue()


def empty_profile() -> dict[str, object]:
    """A profile with every catalogue key: null where allowed, else the empty value."""
    empty: dict[str, object] = {
        "text": "",
        "integer": 0,
        "decimal": Decimal(0),
        "boolean": False,
        "list": (),
    }
    return {name: (None if f.nullable else empty[f.type]) for name, f in FIELDS.items()} | {
        "person_key": "e:someone@example.com",
        "currency": "TRY",
        "email_consent": "none",
    }


def profile(**values: object) -> dict[str, object]:
    return empty_profile() | values


def check(rule: str, values: Mapping[str, object] | None = None, now: datetime = NOW) -> bool:
    return compile_rule(rule, FIELDS)(profile(**(values or {})), now)


def error_of(rule: str, fields: Mapping[str, ProfileField] = FIELDS) -> RuleError:
    with pytest.raises(RuleError) as info:
        compile_rule(rule, fields)
    return info.value


# --- the examples of the brief, each both ways ------------------------------------------


@pytest.mark.parametrize(
    ("rule", "inside", "outside"),
    [
        (
            'spent_30d > 500 and country == "TR"',
            {"spent_30d": Decimal("500.01"), "country": "TR"},
            {"spent_30d": Decimal("500"), "country": "TR"},
        ),
        ('"Elektronik" in categories', {"categories": ("Elektronik", "Kitap")}, {}),
        (
            "last_order_at < now - days(90)",
            {"last_order_at": NOW - timedelta(days=91)},
            {"last_order_at": NOW - timedelta(days=89)},
        ),
        (
            "discounted_orders == orders_count",
            {"discounted_orders": 3, "orders_count": 3},
            {"discounted_orders": 2, "orders_count": 3},
        ),
        ("not cart_abandoned", {"cart_abandoned": False}, {"cart_abandoned": True}),
        ("birthday_month == month(now)", {"birthday_month": 6}, {"birthday_month": 7}),
        (
            'orders_count >= 2 or (total_spent >= 1000.50 and email_consent == "subscribed")',
            {"orders_count": 1, "total_spent": Decimal("1000.50"), "email_consent": "subscribed"},
            {"orders_count": 1, "total_spent": Decimal("1000.49"), "email_consent": "subscribed"},
        ),
        ('top_category in ["Kitap", "Oyuncak"]', {"top_category": "Oyuncak"}, {}),
        ("email != null", {"email": "a@example.com"}, {"email": None}),
    ],
)
def test_brief_examples_accept_matching_profiles_and_refuse_others(
    rule: str, inside: dict[str, object], outside: dict[str, object]
) -> None:
    assert check(rule, inside) is True
    assert check(rule, outside) is False


# --- operators ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("orders_count == 3", True),
        ("orders_count != 3", False),
        ("orders_count < 3", False),
        ("orders_count <= 3", True),
        ("orders_count > 2", True),
        ("orders_count >= 4", False),
        ("3 == orders_count", True),
        ("2 < orders_count", True),
        ("4 <= orders_count", False),
        ('city == "Ankara"', True),
        ('city < "B"', True),
        ('city >= "B"', False),
        ("birthday < today", True),
        ('birthday == date("1990-02-03")', True),
        ("last_order_at > now - hours(1)", True),
        ("last_order_at > now - hours(0.25)", False),
        ("now - last_order_at < hours(1)", True),
        ("today - birthday > days(365)", True),
        ("cart_open == true", True),
        ("cart_open != true", False),
        ("cart_abandoned == false", True),
        ("orders_count + 2 == 5", True),
        ("orders_count - 5 == -2", True),
        ("-orders_count == -3", True),
        ("total_spent - 0.50 == 99.5", True),
        ("orders_count == 1 + 1 + 1", True),
        ("last_order_at + days(1) > now", True),
        ("days(1) + last_order_at > now", True),
        ('birthday + days(1) == date("1990-02-04")', True),
        ("days(2) - hours(48) == days(0)", True),
        ("days(1) == hours(24)", True),
        ('"Kitap" in categories', True),
        ('"Kitap" not in categories', False),
        ('"Oyun" in categories', False),
        ('"Oyun" not in categories', True),
        ('lower(city) in ["ankara", "izmir"]', True),
        ("orders_count in [1, 2, 3]", True),
        ("orders_count not in [1, 2, 3]", False),
        ("orders_count in [1.0, 3.00]", True),
        ('city in ["İzmir",]', False),
        ("orders_count in []", False),
        ("len(categories) == 2", True),
        ('len(city) == 6 and lower(city) == "ankara"', True),
        ("year(birthday) == 1990 and month(birthday) == 2 and day(birthday) == 3", True),
        ("year(now) == 2025 and month(today) == 6 and day(now) == 15", True),
        ("cart_open && orders_count > 2", True),
        ("cart_abandoned || orders_count > 2", True),
        ("cart_abandoned or orders_count > 3", False),
        ("not cart_open", False),
        ("not not cart_open", True),
        ("true", True),
        ("false or cart_open", True),
        ("true and false", False),
        ("country == 'TR' and city == \"Ankara\"", True),
        ('top_category == "Ev \\"&\\" Yaşam"', True),
        ("total_spent == 0.1 + 0.2", False),
        ("10_000 == 10000", True),
    ],
)
def test_operator_gives_expected_result(rule: str, expected: bool) -> None:
    values = {
        "orders_count": 3,
        "city": "Ankara",
        "country": "TR",
        "birthday": date(1990, 2, 3),
        "last_order_at": NOW - timedelta(minutes=30),
        "cart_open": True,
        "cart_abandoned": False,
        "total_spent": Decimal("100.00"),
        "categories": ("Kitap", "Oyuncak"),
        "top_category": 'Ev "&" Yaşam',
    }
    assert check(rule, values) is expected


def test_decimal_literals_are_exact_never_float() -> None:
    # with floats 0.1 + 0.2 is 0.30000000000000004; the language must not drift like that
    assert check("total_spent == 0.1 + 0.2", {"total_spent": Decimal("0.3")}) is True
    assert check("total_spent > 1000.50", {"total_spent": Decimal("1000.51")}) is True
    assert check("total_spent > 1000.50", {"total_spent": Decimal("1000.50")}) is False


def test_precedence_binds_and_tighter_than_or_and_parentheses_override() -> None:
    values = {"cart_open": True, "cart_abandoned": False, "orders_count": 0}
    assert check("cart_open or cart_abandoned and orders_count > 1", values) is True
    assert check("(cart_open or cart_abandoned) and orders_count > 1", values) is False
    assert check("not cart_abandoned and cart_open", values) is True
    assert check("not (cart_abandoned or cart_open)", values) is False


def test_now_dependent_values_follow_each_new_now() -> None:
    rule = compile_rule("last_order_at >= now - days(30)", FIELDS)
    person = profile(last_order_at=datetime(2025, 1, 10, tzinfo=UTC))
    assert rule(person, datetime(2025, 2, 1, tzinfo=UTC)) is True
    assert rule(person, datetime(2025, 3, 1, tzinfo=UTC)) is False
    assert rule(person, datetime(2025, 2, 1, tzinfo=UTC)) is True


def test_today_is_the_date_of_now_in_nows_own_time_zone() -> None:
    rule = compile_rule('today == date("2025-06-16")', FIELDS)
    istanbul = timezone(timedelta(hours=3))
    assert rule(profile(), datetime(2025, 6, 16, 1, 0, tzinfo=istanbul)) is True
    assert rule(profile(), datetime(2025, 6, 16, 1, 0, tzinfo=istanbul).astimezone(UTC)) is False


def test_literal_datetime_without_offset_is_utc() -> None:
    rule = 'first_order_at < datetime("2025-01-01T00:00:00")'
    assert check(rule, {"first_order_at": datetime(2024, 12, 31, 23, 59, tzinfo=UTC)}) is True
    assert check(rule, {"first_order_at": datetime(2025, 1, 1, 0, 0, tzinfo=UTC)}) is False
    assert (
        check(
            'first_order_at == datetime("2025-01-01T03:00:00+03:00")',
            {"first_order_at": datetime(2025, 1, 1, 0, 0, tzinfo=UTC)},
        )
        is True
    )


# --- null semantics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        "last_order_at < now - days(90)",
        "last_order_at >= now - days(90)",
        "avg_order_value > 0",
        "avg_order_value <= 0",
        "avg_order_value == 0",
        "avg_order_value != 0",
        'city != "Ankara"',
        'city == "Ankara"',
        'city in ["Ankara"]',
        'city not in ["Ankara"]',
        "city not in categories",
        "avg_order_value + 1 > 0",
        "avg_order_value - 1 < 0",
        "-avg_order_value < 0",
        "month(birthday) != 3",
        "len(city) != 3",
        'lower(city) != "x"',
        "now - last_order_at > days(1)",
        "cart_value == avg_order_value",
        "cart_value != avg_order_value",
    ],
)
def test_every_comparison_with_null_is_false(rule: str) -> None:
    assert check(rule) is False  # every nullable field in empty_profile() is None


def test_null_is_tested_only_with_equals_null() -> None:
    assert check("email == null") is True
    assert check("email != null") is False
    assert check("null == email", {"email": "a@example.com"}) is False
    assert check("null != email", {"email": "a@example.com"}) is True
    assert check("null == null") is True
    assert check("month(birthday) == null") is True
    assert check("last_order_at - days(1) == null") is True


def test_null_boolean_counts_as_false_and_missing_keys_count_as_null() -> None:
    rule = compile_rule("cart_abandoned", FIELDS)
    assert rule({"cart_abandoned": None}, NOW) is False
    assert compile_rule("not cart_abandoned", FIELDS)({"cart_abandoned": None}, NOW) is True
    assert compile_rule("orders_count > 0", FIELDS)({}, NOW) is False
    assert compile_rule("email == null", FIELDS)({}, NOW) is True
    assert compile_rule('"x" in categories', FIELDS)({}, NOW) is False


def test_rules_return_real_booleans() -> None:
    for rule in ("cart_open", "cart_open and cart_abandoned", "not cart_open", "true"):
        assert type(check(rule, {"cart_open": True})) is bool


# --- type errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message", "position"),
    [
        ('last_order_at < "2024-01-01"', "cannot compare a datetime with text", 14),
        ("birthday < now", "compare dates with today, datetimes with now", 9),
        ('orders_count == "3"', "cannot compare a number with text", 13),
        ("cart_open > false", "'>' cannot order true/false", 10),
        ("orders_count and cart_open", "'and' needs true/false on both sides, not a number", 13),
        ("cart_open or city", "'or' needs true/false on both sides, not text", 10),
        ("not orders_count", "'not' needs true/false, not a number", 0),
        ("orders_count", "a rule must be true or false, not a number", 0),
        ("null", "a rule must be true or false, not null", 0),
        ('"Kitap" in top_category', "'in' needs a list on its right", 8),
        ("orders_count in categories", "'in' compares a number with a list of text items", 13),
        ('orders_count in ["1", "2"]', "'in' compares a number with a list of text items", 13),
        ("categories in categories", "compares a list", 11),
        ('city in [1, "a"]', "list items must all be of one type", 12),
        ("city in [orders_count]", "list items must be literal values", 9),
        ("categories == categories", "lists can only be tested with 'in' or len()", 11),
        ("email < null", "'<' cannot compare with null", 6),
        ('city + "x" == "y"', "cannot compute text + text", 5),
        ("now + now > now", "cannot compute a datetime + a datetime", 4),
        ('-city == "x"', "'-' needs a number or duration, not text", 0),
        ("month(city) == 1", "month() needs a date or a datetime, not text", 6),
        ("days(city) > days(1)", "days() needs a number, not text", 5),
        ("len(orders_count) > 1", "len() needs text or a list, not a number", 4),
        ("days(1, 2) > days(1)", "days() takes exactly 1 argument, got 2", 0),
        ("month() == 1", "month() takes exactly 1 argument, got 0", 0),
        ("date(city) == birthday", "date() needs a literal", 5),
        ('date("15.06.2025") == birthday', "date(): Invalid isoformat string", 5),
        ("orders_count(1) > 1", "orders_count is a profile field, not a function", 0),
        ("days > 1", "days is a function: call it, as in days(90)", 0),
    ],
)
def test_type_errors_are_found_at_compile_time_with_position(
    rule: str, message: str, position: int
) -> None:
    error = error_of(rule)
    assert message in str(error)
    assert error.position == position


# --- syntax errors, carets and suggestions ------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message", "position"),
    [
        ("", "the rule is empty", 0),
        ("   ", "the rule is empty", 0),
        ("orders_count >", "expected a value, found the end of the rule", 14),
        ("orders_count = 2", "unexpected '=' (compare with '==')", 13),
        ("!cart_open", "use 'not'", 0),
        ("cart_open & cart_abandoned", "use 'and' / 'or'", 10),
        ("(cart_open", "expected ')' to close the '('", 10),
        ("orders_count > 1 cart_open", "unexpected name 'cart_open'", 17),
        ("1 < orders_count < 5", "comparisons cannot be chained", 17),
        ('city == "Ankara', "string is not closed", 8),
        ('city == "a\\q"', "unknown escape in string", 10),
        ("orders_count > 1.2.3", "malformed number '1.2.'", 15),
        ("orders_count > 5d", "malformed number '5d'", 15),
        ("city == ş", "unexpected character 'ş'", 8),
        ("city in [1", "expected ']' to close the list", 10),
        ("days(1 > 0", "expected ')' to close the argument list", 10),
    ],
)
def test_syntax_errors_point_at_the_offending_character(
    rule: str, message: str, position: int
) -> None:
    error = error_of(rule)
    assert message in str(error)
    assert error.position == position


def test_error_message_shows_the_rule_with_a_caret_under_the_position() -> None:
    error = error_of('orders_count >= 2 and last_order_at < "2024"')
    lines = str(error).splitlines()
    assert lines[0].startswith("cannot compare a datetime with text at column 37:")
    assert lines[1] == '    orders_count >= 2 and last_order_at < "2024"'
    assert lines[2] == "    " + " " * 36 + "^"
    assert lines[1][lines[2].index("^")] == "<"


def test_caret_points_into_the_right_line_of_a_multiline_rule() -> None:
    error = error_of("orders_count >= 2\n  and last_ordr_at < now")
    lines = str(error).splitlines()
    assert "line 2, column 7" in lines[0]
    assert lines[1] == "      and last_ordr_at < now"
    assert lines[2] == " " * 10 + "^"
    assert lines[2].index("^") == lines[1].index("last_ordr_at")
    assert error.position == 24


def test_unknown_names_suggest_close_matches_and_point_at_the_catalogue() -> None:
    error = error_of("order_count >= 2")
    assert error.position == 0
    assert error.suggestions == ("orders_count",)
    assert "did you mean 'orders_count'?" in str(error)
    assert "`crmsync fields`" in str(error)
    assert error.known_fields == tuple(FIELDS)
    assert "spent_365d" in error.known_fields


def test_upper_case_keywords_are_explained() -> None:
    error = error_of("orders_count > 1 AND cart_open")
    assert "unexpected name 'AND'" in str(error)
    error = error_of("cart_open == TRUE")
    assert "names and keywords are lower-case: true" in str(error)
    assert error.position == 13


def test_evaluating_with_a_naive_now_is_refused() -> None:
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    with pytest.raises(ValueError, match="timezone-aware"):
        segments.evaluate(profile(), datetime(2025, 6, 15, 12, 0))


def test_unknown_name_without_close_match_has_no_suggestion() -> None:
    error = error_of("zzzqqq > 1")
    assert error.suggestions == ()
    assert "did you mean" not in str(error)
    assert "`crmsync fields`" in str(error)


def test_fields_are_checked_against_the_given_catalogue() -> None:
    narrow = catalogue(windows=(30,))
    assert compile_rule("spent_30d > 1", narrow)(profile(spent_30d=Decimal(2)), NOW) is True
    error = error_of("spent_365d >= 10000", narrow)
    assert "unknown name 'spent_365d'" in str(error)
    assert "spent_30d" in error.suggestions


def test_rule_error_is_a_crmsync_error() -> None:
    assert isinstance(error_of("x >"), CrmsyncError)


# --- nothing resembling code execution ------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        '__import__("os")',
        '__import__("os").system("true")',
        'eval("1 == 1")',
        'exec("import os")',
        'open("/etc/passwd") == null',
        "().__class__",
        "orders_count.__class__ == null",
        "lambda: 1",
        "globals()",
        "orders_count > 1; import os",
        "`id`",
        "{1: 2}",
        "[x for x in categories]",
        "email.lower() == 'a'",
        "__builtins__ == null",
        "cart_open if true else cart_open",
    ],
)
def test_code_like_rules_are_rejected(rule: str) -> None:
    with pytest.raises(RuleError):
        compile_rule(rule, FIELDS)


def test_compiling_and_evaluating_never_calls_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec/compile must never be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    assert segments.evaluate(profile(orders_count=2), NOW) == ("repeat",)


# --- segment sets -------------------------------------------------------------------------


def test_segment_set_collects_every_bad_rule_with_its_name() -> None:
    rules = {
        "good": "orders_count > 1",
        "typo": "order_count > 1",
        "types": 'last_order_at < "x"',
        "bad name!": "cart_open",
        "syntax": "orders_count >",
    }
    with pytest.raises(SegmentErrors) as info:
        SegmentSet.compile(rules, FIELDS)
    errors = info.value.errors
    assert [name for name, _ in errors] == ["typo", "types", "bad name!", "syntax"]
    assert all(isinstance(error, RuleError) for _, error in errors)
    assert isinstance(info.value, ConfigError)
    assert [issue.key for issue in info.value.issues] == [
        "segments.typo",
        "segments.types",
        "segments.bad name!",
        "segments.syntax",
    ]
    assert "did you mean 'orders_count'?" in str(info.value)


def test_segment_set_error_keys_follow_the_given_config_key() -> None:
    with pytest.raises(SegmentErrors) as info:
        SegmentSet.compile({"x": "nope"}, FIELDS, key="pipelines.eu.segments")
    assert info.value.issues[0].key == "pipelines.eu.segments.x"


def test_segment_set_evaluates_to_sorted_names_and_knows_fields_read() -> None:
    segments = SegmentSet.compile(
        {"zeta": "orders_count >= 1", "alpha": "cart_open", "mid": '"A" in categories'},
        FIELDS,
    )
    assert segments.names == ("alpha", "mid", "zeta")
    assert len(segments) == 3
    both = profile(orders_count=1, cart_open=True, categories=("A",))
    assert segments.evaluate(both, NOW) == ("alpha", "mid", "zeta")
    assert segments.evaluate(profile(orders_count=1), NOW) == ("zeta",)
    assert segments.evaluate(profile(), NOW) == ()
    assert segments.fields_used == frozenset({"orders_count", "cart_open", "categories"})
    assert segments.rules["mid"] == '"A" in categories'


# --- the shipped defaults -----------------------------------------------------------------


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


DEFAULT_CASES: list[tuple[str, dict[str, object], dict[str, object]]] = [
    (
        "new",
        {"orders_count": 1, "first_order_at": days_ago(10), "last_order_at": days_ago(10)},
        {"orders_count": 3, "first_order_at": days_ago(31), "last_order_at": days_ago(2)},
    ),
    ("repeat", {"orders_count": 2}, {"orders_count": 1}),
    (
        "loyal",
        {"orders_count": 5, "last_order_at": days_ago(179)},
        {"orders_count": 5, "last_order_at": days_ago(181)},
    ),
    ("vip", {"spent_365d": Decimal("10000.00")}, {"spent_365d": Decimal("9999.99")}),
    (
        "at_risk",
        {"orders_count": 2, "last_order_at": days_ago(120)},
        {"orders_count": 2, "last_order_at": days_ago(60)},
    ),
    (
        "lapsed",
        {"orders_count": 1, "last_order_at": days_ago(200)},
        {"orders_count": 1, "last_order_at": days_ago(170)},
    ),
    ("cart_abandoners", {"cart_open": True, "cart_abandoned": True}, {"cart_open": True}),
    (
        "only_discount",
        {"orders_count": 3, "discounted_orders": 3},
        {"orders_count": 3, "discounted_orders": 2},
    ),
    ("birthday_this_month", {"birthday_month": 6}, {"birthday_month": 5}),
]


@pytest.mark.parametrize(("name", "inside", "outside"), DEFAULT_CASES)
def test_default_segment_takes_matching_profiles_and_leaves_others(
    name: str, inside: dict[str, object], outside: dict[str, object]
) -> None:
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    assert name in segments.evaluate(profile(**inside), NOW)
    assert name not in segments.evaluate(profile(**outside), NOW)


def test_default_segments_cover_the_documented_names() -> None:
    assert set(DEFAULT_SEGMENTS) == {name for name, _, _ in DEFAULT_CASES}


def test_a_person_without_orders_is_in_no_order_based_default_segment() -> None:
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    assert segments.evaluate(profile(), NOW) == ()


def test_at_risk_and_lapsed_split_at_180_days_and_only_discount_needs_two_orders() -> None:
    segments = SegmentSet.compile(DEFAULT_SEGMENTS, FIELDS)
    edge = profile(orders_count=2, last_order_at=days_ago(180))
    assert "at_risk" in segments.evaluate(edge, NOW)
    assert "lapsed" not in segments.evaluate(edge, NOW)
    older = profile(orders_count=2, last_order_at=days_ago(180) - timedelta(seconds=1))
    assert "lapsed" in segments.evaluate(older, NOW)
    assert "at_risk" not in segments.evaluate(older, NOW)
    one = profile(orders_count=1, discounted_orders=1)
    assert "only_discount" not in segments.evaluate(one, NOW)
