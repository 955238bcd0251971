"""``crmsync check`` for Klaviyo: the key, its scopes, and the owned lists.

One cheap GET per read scope a sync needs (``lists:read``, ``profiles:read``, and
``subscriptions:read`` for the suppression jobs of deletions): a 401 means the key itself
is wrong, a 403 names the scope the key lacks (Klaviyo's own detail says which). Write
scopes cannot be tried without writing, so the check says so; a missing one stops the
first push with a 403 that names it. The owned lists are counted, and the lists made in
the last 24 hours are compared with Klaviyo's daily cap on list creation.

For a pipeline that sends events (``event_checks``), ``events:write`` is tried by a bulk
create job of no event: Klaviyo checks the key's scopes before it reads the body, so a
403 names the missing scope, and any other answer (202, or 400 for the empty list) means
the key may create events. No event is created.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.klaviyo.client import KlaviyoAccessError, KlaviyoApi
from connectors.klaviyo.config import KlaviyoConfig
from connectors.klaviyo.consent import parse_time
from crmsync.contract import Check
from crmsync.errors import ConnectorError

WRITE_SCOPES = "profiles:write, lists:write, subscriptions:write"
EVENTS_SCOPE = "events:write"
NO_EVENTS = {  # a bulk create job of no event: tries the scope, creates nothing
    "data": {
        "type": "event-bulk-create-job",
        "attributes": {"events-bulk-create": {"data": []}},
    }
}
NEAR_CAP = 0.8  # warn when this share of the daily list creations is used


def run_checks(api: KlaviyoApi, config: KlaviyoConfig) -> list[Check]:
    checks: list[Check] = []
    try:
        lists = list(api.list_items(fields=("name", "created")))
    except KlaviyoAccessError as exc:
        if exc.status == 401:
            return [Check("API key", False, str(exc))]
        checks.append(Check("API key", True, "accepted"))
        checks.append(Check("scope lists:read", False, _missing(exc)))
        lists = None
    except ConnectorError as exc:
        return [Check(f"reach {config.base_url}", False, str(exc))]
    else:
        checks += [Check("API key", True, "accepted"), Check("scope lists:read", True)]
    checks.append(_profiles_read(api))
    checks.append(_subscriptions_read(api))
    checks.append(
        Check(
            "write scopes",
            True,
            f"{WRITE_SCOPES} cannot be tried without writing; a missing one stops the first "
            "push with a 403 naming it",
        )
    )
    if lists is not None:
        checks.append(_owned_lists(lists, config))
    return checks


def _profiles_read(api: KlaviyoApi) -> Check:
    try:
        next(api.profiles(None, ["email"], subscriptions=False, page_size=1), None)
    except KlaviyoAccessError as exc:
        return Check("scope profiles:read", False, _missing(exc))
    except ConnectorError as exc:
        return Check("scope profiles:read", False, str(exc))
    return Check("scope profiles:read", True)


def _subscriptions_read(api: KlaviyoApi) -> Check:
    """Collecting the suppression jobs of people deleted at the source needs this scope."""
    try:
        api.latest_suppression_jobs()
    except KlaviyoAccessError as exc:
        return Check("scope subscriptions:read", False, _missing(exc))
    except ConnectorError as exc:
        return Check("scope subscriptions:read", False, str(exc))
    return Check("scope subscriptions:read", True)


def _missing(exc: KlaviyoAccessError) -> str:
    return f"{exc.detail or 'permission denied'}: grant it under Settings > API keys in Klaviyo"


def _owned_lists(lists: list[dict[str, object]], config: KlaviyoConfig) -> Check:
    prefix = config.list_prefix
    owned = 0
    recent = 0
    day_ago = datetime.now(UTC) - timedelta(days=1)
    for item in lists:
        attributes = item.get("attributes")
        if not isinstance(attributes, dict):
            continue
        name = attributes.get("name")
        if isinstance(name, str) and name.startswith(prefix):
            owned += 1
        created = parse_time(attributes.get("created"))
        if created is not None and created > day_ago:
            recent += 1
    cap = config.rate_limits.list_creates_per_day
    detail = f"{owned} of {len(lists)} lists start with {prefix!r}"
    if recent >= NEAR_CAP * cap:
        detail += (
            f"; warning: {recent} lists were created in the last 24 hours and Klaviyo allows "
            f"{cap} a day, so new segments may wait a day for their lists"
        )
    return Check(f"lists {prefix}*", True, detail)


def event_checks(api: KlaviyoApi) -> list[Check]:
    """``events:write``, which the pipeline's events need (see the module's docstring)."""
    what = f"scope {EVENTS_SCOPE}"
    try:
        api.create_events(NO_EVENTS)
    except KlaviyoAccessError as exc:
        if exc.status == 401:
            return [Check("API key", False, str(exc))]
        return [
            Check(
                what,
                False,
                f"{exc.detail or 'permission denied'}: the pipeline sends events; give the "
                f"key {EVENTS_SCOPE} under Settings > API keys in Klaviyo, or set events = "
                "false in the pipeline",
            )
        ]
    except ConnectorError as exc:
        return [Check(what, False, str(exc))]
    return [Check(what, True, "tried with a bulk create of no event")]
