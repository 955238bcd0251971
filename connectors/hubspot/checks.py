"""``crmsync check`` for HubSpot: the token, the read scopes, the group, the segments
property, the lists, the subscription types, and the day's remaining calls.

One cheap call per read scope a sync needs: the property list (``crm.schemas.contacts.read``;
a 401 means the token itself is wrong) and a batch read of one address that cannot exist
(``crm.objects.contacts.read``, used to find contacts to archive). Write scopes
(``crm.objects.contacts.write``, ``crm.schemas.contacts.write``) cannot be tried without
writing, so the check says so; a missing one stops the first run with a 403 naming it.
The properties the mappings sending here need are compared with the account's by the
plan ``prepare`` carries out, creating nothing: each property of the same name and
another type (or whose values HubSpot lets nobody write, or a dropdown outside crmsync's
group without a needed option) is a failed check naming it. With ``lists``, the list search
(``crm.lists.read``) names the owned lists and any list of an owned name that is not
MANUAL (crmsync cannot set its members); with ``opt_out_subscriptions``, the
subscription types are read (``communication_preferences.read``) and each named one
must exist.

For a pipeline that sends events as commerce objects (``commerce_checks``), each object
its event kinds write is tried: a search of one (``crm.objects.<object>.read``, for
orders and carts, which a run searches for what a crash may have made) and an archive
of an id no object has (``crm.objects.<object>.write``; it changes nothing). HubSpot
checks the private app's scopes before anything else, so a 403 names the missing one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from connectors.hubspot.client import GROUPS, HubSpotAccessError, HubSpotApi, HubSpotApiError
from connectors.hubspot.commerce_bodies import CARTS, LINE_ITEMS, ORDERS
from connectors.hubspot.config import HubSpotConfig
from connectors.hubspot.deals import deal_checks
from connectors.hubspot.properties import SEGMENTS_FIELD_TYPE, Existing, plan
from connectors.kit.checks import field_conflicts
from crmsync.contract import Check, FieldSpec
from crmsync.errors import ConfigError, ConnectorError
from crmsync.events import EventKind

WRITE_SCOPES = "crm.objects.contacts.write, crm.schemas.contacts.write"
LIST_WRITE = "crm.lists.write"
PREFERENCES_WRITE = "communication_preferences.write"
PROBE = "crmsync-check@example.invalid"  # an address no contact has
DAILY_REMAINING = "X-HubSpot-RateLimit-Daily-Remaining"


def run_checks(
    api: HubSpotApi, config: HubSpotConfig, fields: Sequence[FieldSpec] = ()
) -> list[Check]:
    try:
        response = api.send("GET", GROUPS)
        if not response.is_success:
            raise HubSpotApiError.from_response(response)
        existing = [Existing.of(item) for item in api.properties()]
    except HubSpotAccessError as exc:
        if exc.status == 401:
            return [Check("access token", False, str(exc))]
        return [Check("access token", True, "accepted"), _missing("crm.schemas.contacts.read", exc)]
    except ConnectorError as exc:
        return [Check(f"reach {config.base_url}", False, str(exc))]
    checks = [
        Check("access token", True, "accepted"),
        Check("scope crm.schemas.contacts.read", True),
    ]
    checks.append(_contacts_read(api))
    if config.lists:
        checks.append(_lists(api, config.segment_prefix))
    if config.opt_out_subscriptions:
        checks.append(_subscriptions(api, config.opt_out_subscriptions))
    writes = ", ".join(
        [WRITE_SCOPES]
        + ([LIST_WRITE] if config.lists else [])
        + ([PREFERENCES_WRITE] if config.opt_out_subscriptions else [])
    )
    checks.append(
        Check(
            "write scopes",
            True,
            f"{writes} cannot be tried without writing; a missing one stops the first "
            "run with a 403 naming it",
        )
    )
    groups = {str(g.get("name")) for g in response.json().get("results") or ()}
    group = config.property_group
    made = "exists" if group in groups else "is created by the first run"
    checks.append(Check(f"property group {group}", True, made))
    checks.append(_segments(existing, config.segments_property))
    if fields:
        checks.extend(_mapped(existing, fields, config))
    checks.extend(_deals(api, config))
    remaining = response.headers.get(DAILY_REMAINING)
    if remaining is not None and remaining.isdigit():
        left = int(remaining)
        detail = f"{left:,} of the {config.rate_limits.daily:,} calls a day are left today"
        checks.append(Check("daily limit", True, detail))
    return checks


def _contacts_read(api: HubSpotApi) -> Check:
    try:
        api.ids_by_email([PROBE])
    except HubSpotAccessError as exc:
        return _missing("crm.objects.contacts.read", exc)
    except ConnectorError as exc:
        return Check("scope crm.objects.contacts.read", False, str(exc))
    return Check("scope crm.objects.contacts.read", True)


def _lists(api: HubSpotApi, prefix: str) -> Check:
    try:
        found = api.manual_lists(prefix)
        others = [
            item
            for item in api.all_lists(prefix)
            if str(item.get("name", "")).startswith(prefix)
            and item.get("processingType") != "MANUAL"
        ]
    except HubSpotAccessError as exc:
        return _missing("crm.lists.read", exc)
    except ConnectorError as exc:
        return Check("scope crm.lists.read", False, str(exc))
    if others:
        names = ", ".join(sorted(str(item.get("name")) for item in others)[:5])
        return Check(
            "lists",
            False,
            f"{names}: named like crmsync's lists but not MANUAL, so crmsync cannot set "
            "their members: rename them in HubSpot, or change segment_prefix",
        )
    owned = sum(1 for item in found if str(item.get("name", "")).startswith(prefix))
    return Check(
        "lists",
        True,
        f"{owned} MANUAL list(s) named {prefix}*; more are created as segments appear",
    )


def _subscriptions(api: HubSpotApi, wanted: tuple[str, ...]) -> Check:
    try:
        known = {str(item.get("id")): str(item.get("name")) for item in api.subscription_types()}
    except HubSpotAccessError as exc:
        return _missing("communication_preferences.read", exc)
    except ConnectorError as exc:
        return Check("subscription types", False, str(exc))
    missing = [ident for ident in wanted if ident not in known]
    if missing:
        return Check(
            "subscription types",
            False,
            f"no subscription type {missing[0]} in HubSpot: fix opt_out_subscriptions "
            f"(known: {', '.join(f'{k} {v}' for k, v in sorted(known.items())[:10])})",
        )
    named = ", ".join(known[ident] for ident in wanted)
    return Check("subscription types", True, f"platform opt-outs unsubscribe from {named}")


def _segments(existing: list[Existing], name: str) -> Check:
    found = next((p for p in existing if p.name == name), None)
    if found is None:
        return Check(f"property {name}", True, "is created by the first run")
    if found.type != "enumeration" or found.field_type != SEGMENTS_FIELD_TYPE:
        return Check(
            f"property {name}",
            False,
            f"is {found.type}/{found.field_type}; the segments need enumeration/checkbox: "
            "name another property in segments_property",
        )
    return Check(f"property {name}", True, f"{len(found.options)} options")


def _mapped(
    existing: list[Existing], fields: Sequence[FieldSpec], config: HubSpotConfig
) -> list[Check]:
    """The mapped properties as ``prepare`` would plan them (the segments property is
    ``_segments``'s): a failed check per conflict, else what the first run creates."""
    name = config.segments_property
    others = [found for found in existing if found.name != name]
    try:
        planned = plan(fields, name, others, config.property_group)
    except ConfigError as exc:
        return field_conflicts("property", exc)
    made = [body["name"] for body in planned.create if body["name"] != name]
    detail = f"{len(fields) - len(made)} of the {len(fields)} exist"
    if made:
        detail += f"; {', '.join(made)} are created by the first run"
    if planned.grow:
        detail += f"; options are added to {', '.join(n for n, _ in planned.grow)}"
    return [Check("mapped properties", True, detail)]


def _deals(api: HubSpotApi, config: HubSpotConfig) -> list[Check]:
    """With events as deals: the pipelines and stages, crmsync's deal properties and the
    deal write scopes (``deals.deal_checks``)."""
    return deal_checks(api, config) if config.events.objects == "deals" else []


def _missing(scope: str, exc: HubSpotAccessError) -> Check:
    detail = f"{exc.message or 'permission denied'}: grant it to the private app in HubSpot"
    return Check(f"scope {scope}", False, detail)


# the commerce objects each event kind writes (events.objects = "commerce")
_COMMERCE_OBJECTS: dict[EventKind, tuple[str, ...]] = {
    EventKind.PLACED_ORDER: (ORDERS, LINE_ITEMS),
    EventKind.FULFILLED_ORDER: (ORDERS,),
    EventKind.CANCELLED_ORDER: (ORDERS,),
    EventKind.REFUNDED_ORDER: (ORDERS,),
    EventKind.STARTED_CHECKOUT: (CARTS, LINE_ITEMS),
    EventKind.CHECKOUT_CLOSED: (CARTS,),
}
_SEARCHED = (ORDERS, CARTS)  # a run searches these for the objects a crash may have made
NO_OBJECT = "0"  # no HubSpot object has this id: archiving it changes nothing


def commerce_checks(api: HubSpotApi, kinds: Collection[EventKind]) -> list[Check]:
    """The read and write scopes of the commerce objects ``kinds`` write."""
    objects = sorted({o for kind in kinds for o in _COMMERCE_OBJECTS.get(kind, ())})
    checks = []
    for name in objects:
        if name in _SEARCHED:
            checks.append(_tried(api, name, "read", "search", {"limit": 1}))
        probe = {"inputs": [{"id": NO_OBJECT}]}
        checks.append(_tried(api, name, "write", "batch/archive", probe))
    return checks


def _tried(api: HubSpotApi, name: str, level: str, call: str, body: Any) -> Check:
    """One call on the ``name`` objects that needs the scope ``crm.objects.<name>.<level>``."""
    scope = f"crm.objects.{name}.{level}"
    what = f"scope {scope}"
    try:
        api.document("POST", f"/crm/v3/objects/{name}/{call}", body)
    except HubSpotAccessError as exc:
        if exc.status == 401:
            return Check("access token", False, str(exc))
        return Check(
            what,
            False,
            f"{exc.message or 'permission denied'}: the pipeline sends events as commerce "
            f"objects; grant {scope} to the private app in HubSpot (Settings > Integrations "
            "> Private apps), or set events.objects = 'deals' for an account without "
            "commerce objects, or events = false in the pipeline",
        )
    except HubSpotApiError as exc:
        if level == "write":  # past the scope check: HubSpot answered the probe itself
            return Check(what, True, f"granted (the probe's own answer: {exc.status})")
        return Check(what, False, f"{exc} (does this account have {name}?)")
    except ConnectorError as exc:
        return Check(what, False, str(exc))
    return Check(what, True)
