"""The REST source's config: presets merged under explicit keys, mapping checks reported at
once with their keys, secrets held as secrets, and every auth kind reaching the wire."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from connectors.rest import RestConfig, RestSource
from connectors.rest.streams import StreamConfig
from crmsync.config import validate_connector
from crmsync.contract import ConnectorContext
from crmsync.errors import ConfigError, ConfigIssue
from crmsync.records import Stream
from crmsync.registry import SOURCES

BASE = "https://shop.example.test"
CONTEXT = ConnectorContext("shop", Path("."))
CK = "ck_0123456789abcdef"
CS = "cs_fedcba9876543210"
UNTIL = datetime(2030, 1, 1, tzinfo=UTC)


def woo(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "rest",
        "preset": "woocommerce",
        "base_url": BASE,
        "auth": {"username": CK, "password": CS},
        **extra,
    }


def test_the_woocommerce_preset_needs_only_base_url_and_keys() -> None:
    config = RestConfig(**woo())
    orders = config.streams["orders"]
    assert orders.path == "/wp-json/wc/v3/orders"
    assert orders.incremental_param == "modified_after"
    assert orders.page_size_param == "per_page"
    assert orders.pagination.type == "page"
    assert config.auth.type == "basic"
    assert set(config.streams) == {"customers", "orders"}


def test_explicit_keys_override_the_preset_one_by_one() -> None:
    config = RestConfig(
        **woo(
            streams={
                "customers": {"page_size": 50, "fields": {"phone": "shipping.phone"}},
                "orders": {"enabled": False},
            }
        )
    )
    customers = config.streams["customers"]
    assert customers.page_size == 50
    assert customers.fields["phone"].path == "shipping.phone"
    assert customers.fields["email"].path == ["email", "billing.email"]  # the preset's, kept
    assert customers.path == "/wp-json/wc/v3/customers"
    assert RestSource(config, CONTEXT).streams() == [Stream.CUSTOMERS]


def test_choosing_another_auth_type_replaces_the_presets_auth() -> None:
    config = RestConfig(**woo(auth={"type": "bearer", "token": "tok_abcdef123456"}))
    assert config.auth.type == "bearer"


def test_an_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="woocommerce"):
        RestConfig(kind="rest", preset="magento", base_url=BASE)


def test_unknown_keys_are_errors_so_typos_show() -> None:
    with pytest.raises(ValidationError, match="page_sise"):
        RestConfig(**woo(streams={"orders": {"page_sise": 10}}))


def test_secrets_never_show_in_the_config_repr() -> None:
    config = RestConfig(**woo())
    assert CS not in repr(config) and CK not in repr(config)


def test_mapping_problems_are_reported_together_when_the_config_loads() -> None:
    streams = {
        "customers": {"path": "/c", "fields": {"email": "mail", "shoe_size": "size"}},
        "orders": {"path": "/o", "fields": {"external_id": "id"}, "items": {"path": "x"}},
    }
    raw = {"kind": "rest", "base_url": BASE, "streams": streams}
    issues: list[ConfigIssue] = []
    assert validate_connector(SOURCES, "sources", "shop", raw, issues) is None
    [issue] = issues
    assert issue.key == "sources.shop"
    for key in (
        "streams.customers.fields.shoe_size",
        "streams.customers.fields.external_id",  # required, not mapped
        "streams.orders.fields.total",
        "streams.orders.items",  # carts only
    ):
        assert key in issue.message


def test_a_source_built_from_raw_tables_names_the_full_keys() -> None:
    streams = {"customers": {"path": "/c", "fields": {"email": "mail"}}}
    config = RestConfig.model_construct(
        kind="rest", base_url=BASE, streams={"customers": StreamConfig(**streams["customers"])}
    )
    with pytest.raises(ConfigError) as raised:
        RestSource(config, CONTEXT)
    assert [i.key for i in raised.value.issues] == [
        "sources.shop.streams.customers.fields.external_id"
    ]


def test_a_config_with_no_enabled_stream_is_refused() -> None:
    with pytest.raises(ValidationError, match="no enabled stream"):
        RestConfig(**woo(streams={"customers": {"enabled": False}, "orders": {"enabled": False}}))


STREAM = {"path": "/v1/people", "pagination": {"type": "none"}, "fields": {"external_id": "id"}}


def read_once(auth: dict[str, Any]) -> respx.Route:
    src = RestSource(
        {"kind": "rest", "base_url": BASE, "auth": auth, "streams": {"customers": STREAM}},
        CONTEXT,
    )
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/people").respond(200, json=[{"id": 1}])
        assert len(list(src.read(Stream.CUSTOMERS, None, UNTIL))) == 1
    return route


def test_api_key_header_auth() -> None:
    route = read_once({"type": "api_key", "key": "key_123456", "header": "X-Shop-Key"})
    assert route.calls.last.request.headers["X-Shop-Key"] == "key_123456"


def test_api_key_query_auth() -> None:
    route = read_once({"type": "api_key", "key": "key_123456", "query": "api_key"})
    assert route.calls.last.request.url.params["api_key"] == "key_123456"


def test_bearer_auth() -> None:
    route = read_once({"type": "bearer", "token": "tok_123456"})
    assert route.calls.last.request.headers["Authorization"] == "Bearer tok_123456"


def test_basic_auth_with_consumer_key_and_secret() -> None:
    route = read_once({"type": "basic", "username": CK, "password": CS})
    expected = base64.b64encode(f"{CK}:{CS}".encode()).decode()
    assert route.calls.last.request.headers["Authorization"] == f"Basic {expected}"


def test_oauth2_client_credentials_refreshes_when_the_api_says_401() -> None:
    auth = {
        "type": "oauth2",
        "token_url": f"{BASE}/oauth/token",
        "client_id": "crmsync",
        "client_secret": "secret_abcdef",
        "scope": "read_customers",
    }
    src = RestSource(
        {"kind": "rest", "base_url": BASE, "auth": auth, "streams": {"customers": STREAM}},
        CONTEXT,
    )
    with respx.mock(base_url=BASE) as mock:
        token = mock.post("/oauth/token").mock(
            side_effect=[
                httpx.Response(200, json={"access_token": "first_token", "expires_in": 3600}),
                httpx.Response(200, json={"access_token": "second_token", "expires_in": 3600}),
            ]
        )
        api = mock.get("/v1/people").mock(
            side_effect=[httpx.Response(401), httpx.Response(200, json=[{"id": 1}])]
        )
        assert len(list(src.read(Stream.CUSTOMERS, None, UNTIL))) == 1
    assert token.call_count == 2
    assert [c.request.headers["Authorization"] for c in api.calls] == [
        "Bearer first_token",
        "Bearer second_token",
    ]
    assert b"scope=read_customers" in token.calls.last.request.content


def test_an_unknown_time_zone_is_a_config_error_under_its_key() -> None:
    """Caught when the configuration loads (so by `crmsync check`), not by the run."""
    field = {"path": "date_created", "timezone": "Mars/Base"}
    streams = {"orders": {"fields": {"placed_at": field}}}
    issues: list[ConfigIssue] = []
    raw = woo(timezone="Mars/Olympus", streams=streams)
    assert validate_connector(SOURCES, "sources", "shop", raw, issues) is None
    found = {issue.key: issue.message for issue in issues}
    assert "unknown time zone 'Mars/Olympus'" in found["sources.shop.timezone"]
    key = "sources.shop.streams.orders.fields.placed_at.timezone"
    assert "unknown time zone 'Mars/Base'" in found[key], found


def test_a_table_over_a_preset_path_keeps_the_path_and_a_const_replaces_the_spec() -> None:
    streams = {
        "orders": {
            "fields": {
                "currency": {"default": "TRY"},  # the preset's path, with a default
                "status": {"const": "paid"},  # instead of the preset's path and map
            }
        }
    }
    fields = RestConfig(**woo(streams=streams)).streams["orders"].fields
    assert (fields["currency"].path, fields["currency"].default) == ("currency", "TRY")
    assert (fields["status"].path, fields["status"].const, fields["status"].map) == ("", "paid", {})


def test_an_orders_stream_mapping_no_email_but_a_customer_id_runs() -> None:
    """Issue 9's crash: an orders stream without `email` now builds orders (email None)."""
    stream = {
        "path": "/v1/orders",
        "pagination": {"type": "none"},
        "fields": {
            "external_id": "id",
            "customer_external_id": "customer",
            "placed_at": "at",
            "status": {"const": "paid"},
            "currency": {"default": "TRY"},
            "total": "total",
        },
    }
    src = RestSource({"kind": "rest", "base_url": BASE, "streams": {"orders": stream}}, CONTEXT)
    raw = {"id": 1, "customer": 9, "at": "2025-01-01T00:00:00Z", "total": "10"}
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/orders").respond(200, json=[raw])
        [order] = src.read(Stream.ORDERS, None, UNTIL)
    assert (order.external_id, order.customer_external_id, order.email) == ("1", "9", None)
