"""``crmsync check`` for Mailchimp: key format, data centre, key accepted, list exists.

Each failure says what to change. Nothing here prints the key: messages name the data
centre and the list id, which are not secrets.

For a pipeline that sends events (``event_checks``): one GET of the account's e-commerce
stores, which the events need (a store per source, its orders and carts).
"""

from __future__ import annotations

from connectors.mailchimp.client import MailchimpApi, MailchimpApiError
from connectors.mailchimp.config import MailchimpConfig, key_data_centre
from connectors.mailchimp.ecommerce_api import EcommerceApi
from crmsync.contract import Check
from crmsync.errors import AuthError, ConfigError, ConnectorError


def run_checks(api: MailchimpApi, config: MailchimpConfig) -> list[Check]:
    checks = [_key_format(config)]
    base = config.resolved_base_url()
    try:
        api.ping()
    except AuthError:
        checks.append(
            Check(
                "API key",
                False,
                f"Mailchimp refused the API key (401): check {config.api_key_origin()}, and "
                "that the key was not revoked",
            )
        )
        return checks
    except ConfigError:
        checks.append(
            Check(
                "data centre",
                False,
                f"cannot reach {base}: check the data-centre suffix of the API key "
                f"({config.data_centre()!r}) or the server/base_url settings",
            )
        )
        return checks
    except ConnectorError as exc:
        checks.append(Check(f"ping {base}", False, str(exc)))
        return checks
    checks.append(Check(f"ping {base}", True, "API key accepted"))
    checks.append(_list_exists(api, config.list_id))
    return checks


def _key_format(config: MailchimpConfig) -> Check:
    dc = key_data_centre(config.api_key)
    if dc is None:
        if config.base_url is not None:  # requests go there: no data centre needed
            return Check("API key format", True, f"no '-<dc>' suffix; using {config.base_url}")
        detail = "no '-<dc>' suffix; the server setting supplies the data centre"
        return Check("API key format", config.server is not None, detail)
    if config.server is not None and config.server != dc:
        return Check(
            "API key format",
            False,
            f"the key belongs to data centre {dc!r} but server is {config.server!r}",
        )
    return Check("API key format", True, f"data centre {dc}")


def _list_exists(api: MailchimpApi, list_id: str) -> Check:
    what = f"list {list_id}"
    try:
        found = api.get_list(list_id)
    except MailchimpApiError as exc:
        if exc.status == 404:
            return Check(
                what,
                False,
                "no audience with this id for this key: check list_id (Audience > Settings > "
                "Audience name and defaults shows the Audience ID)",
            )
        return Check(what, False, str(exc))
    except ConnectorError as exc:
        return Check(what, False, str(exc))
    stats = found.get("stats") or {}
    return Check(
        what, True, f"{found.get('name', '?')!r}, {stats.get('member_count', '?')} members"
    )


def event_checks(api: EcommerceApi, store_prefix: str) -> list[Check]:
    """Access to the e-commerce API: one GET of /ecommerce/stores."""
    what = "e-commerce access"
    try:
        found = api.stores()
    except AuthError as exc:
        return [
            Check(
                what,
                False,
                f"{exc}. The pipeline sends events as Mailchimp e-commerce data: use an API "
                "key of a user who may manage the account's e-commerce stores (an admin's), "
                "or set events = false in the pipeline",
            )
        ]
    except (MailchimpApiError, ConnectorError) as exc:
        return [Check(what, False, f"GET /ecommerce/stores: {exc}")]
    total = found.get("total_items", "?")
    detail = (
        f"/ecommerce/stores answered ({total} store(s)); the stores named {store_prefix}<source> "
        "are created by the first run that sends events"
    )
    return [Check(what, True, detail)]
