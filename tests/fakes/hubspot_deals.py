"""The fake HubSpot's deals: deals in pipelines, the deal properties and their groups.

Written from HubSpot's public guides (developers.hubspot.com: the deals guide, the
pipelines guide, the properties guide; no machine-readable spec is copied):

- deals are written with the CRM objects' batch endpoints (``POST /crm/v3/objects/deals/
  batch/create|update|archive`` and ``.../search``), which the commerce objects' routes
  already check (``hubspot_commerce``); associations at create name HUBSPOT_DEFINED
  type 3 (deal to contact) or 19 (deal to line item);
- ``pipeline`` and ``dealstage`` take internal ids; a deal created without a pipeline
  is in ``default`` (every account has it); a stage must be one of its pipeline's, and
  a create needs ``dealstage`` (HubSpot refuses, per input or as a 400);
- values of HubSpot's deal properties and of those an app created must fit their type
  (``amount`` a plain decimal, ``closedate`` ISO 8601 in UTC or milliseconds);
  ``deal_currency_code`` must be one of the account's currencies;
- ``GET /crm/v3/pipelines/deals`` answers ``results`` of ``{id, label, displayOrder,
  archived, stages: [{id, label, displayOrder, archived, metadata}]}``;
- ``/crm/v3/properties/deals`` (GET, POST) and ``/crm/v3/properties/deals/groups``
  (GET, POST) check their bodies as the contacts' do.

A request the docs do not allow is a violation (tests fail); what HubSpot refuses
(an unknown stage, an unknown property) is answered as HubSpot does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.fakes.hubspot import (
    FakeHubSpot,
    Property,
    _type_problem,
    new_group,
    new_property,
    route,
)
from tests.fakes.hubspot_commerce import (
    ACCOUNT_PROPERTIES,
    REFUSALS,
    CommerceObject,
    _archive,
    _create,
    _search,
    _update,
    live,
    objects,
)

DEALS = "deals"
PROPERTIES = "/crm/v3/properties/deals"
DEFAULT_STAGES = (
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
)
# (name, type, fieldType, read-only): the deal properties of a new account crmsync meets
DEAL_DEFINED = (
    ("dealname", "string", "text", False),
    ("amount", "number", "number", False),
    ("closedate", "datetime", "date", False),
    ("pipeline", "enumeration", "select", False),
    ("dealstage", "enumeration", "select", False),
    ("deal_currency_code", "enumeration", "select", False),
    ("description", "string", "textarea", False),
    ("hs_object_id", "number", "number", True),
    ("createdate", "datetime", "date", True),
    ("hs_lastmodifieddate", "datetime", "date", True),
)
CHECKED_ELSEWHERE = frozenset({"pipeline", "dealstage", "deal_currency_code"})


def _state(fake: FakeHubSpot) -> dict[str, Any]:
    found: dict[str, Any] | None = fake.__dict__.get("deals_account")
    if found is None:
        found = {
            "pipelines": {"default": list(DEFAULT_STAGES)},
            "currencies": {"EUR", "TRY", "USD"},
            "groups": {
                "dealinformation": {
                    "name": "dealinformation",
                    "label": "Deal information",
                    "displayOrder": 0,
                    "archived": False,
                }
            },
            "properties": {
                name: Property(
                    name, name, kind, field, "dealinformation", hubspot_defined=True, read_only=ro
                )
                for name, kind, field, ro in DEAL_DEFINED
            },
        }
        fake.__dict__["deals_account"] = found
    return found


# -- knobs --------------------------------------------------------------------------------


def pipelines(fake: FakeHubSpot) -> dict[str, list[str]]:
    """Pipeline id -> its stage ids (the test may add a pipeline or a stage)."""
    found: dict[str, list[str]] = _state(fake)["pipelines"]
    return found


def currencies(fake: FakeHubSpot) -> set[str]:
    """The account's currencies (a deal in another is refused)."""
    found: set[str] = _state(fake)["currencies"]
    return found


def deal_properties(fake: FakeHubSpot) -> dict[str, Property]:
    found: dict[str, Property] = _state(fake)["properties"]
    return found


def add_deal_property(fake: FakeHubSpot, name: str, kind: str, field_type: str) -> None:
    """A deal property made in HubSpot by somebody else."""
    deal_properties(fake)[name] = Property(name, name, kind, field_type, "dealinformation")


def deals(fake: FakeHubSpot) -> list[CommerceObject]:
    """The deals not archived."""
    return live(fake, DEALS)


def all_deals(fake: FakeHubSpot) -> dict[str, CommerceObject]:
    return objects(fake, DEALS)


# -- what HubSpot refuses in a deal's properties ---------------------------------------


def _refusal(
    fake: FakeHubSpot, properties: dict[str, str], made: CommerceObject | None
) -> str | None:
    held = deal_properties(fake)
    for name, value in properties.items():
        found = held.get(name)
        if found is not None and found.read_only:
            return f'"{name}" is a read only property'
        if found is None or name in CHECKED_ELSEWHERE or value == "":
            continue
        problem = _type_problem(found, value)
        if problem is not None:
            return f'{value!r} is {problem[1]} for "{name}"'
    currency = properties.get("deal_currency_code")
    if currency and currency not in currencies(fake):
        return f"{currency!r} is not one of the account's currencies (deal_currency_code)"
    before = made.properties if made is not None else {}
    pipeline = properties.get("pipeline") or before.get("pipeline") or "default"
    stage = properties.get("dealstage") or before.get("dealstage")
    if pipeline not in pipelines(fake):
        return f"{pipeline!r} is not a valid pipeline"
    if stage is None:
        return "dealstage is required to create a deal"
    if stage not in pipelines(fake)[pipeline]:
        return f"{stage!r} is not a valid stage of pipeline {pipeline!r}"
    return None


def _known(fake: FakeHubSpot) -> Iterable[str]:
    return deal_properties(fake)


ACCOUNT_PROPERTIES[DEALS] = _known
REFUSALS[DEALS] = _refusal
route("POST", f"/crm/v3/objects/{DEALS}/batch/create")(_create(DEALS))
route("POST", f"/crm/v3/objects/{DEALS}/batch/update")(_update(DEALS))
route("POST", f"/crm/v3/objects/{DEALS}/batch/archive")(_archive(DEALS))
route("POST", f"/crm/v3/objects/{DEALS}/search")(_search(DEALS))


# -- pipelines, properties, groups -------------------------------------------------------


@route("GET", "/crm/v3/pipelines/deals")
def list_pipelines(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    results = [
        {
            "id": ident,
            "label": "Sales Pipeline" if ident == "default" else ident,
            "displayOrder": order,
            "archived": False,
            "stages": [
                {
                    "id": stage,
                    "label": stage,
                    "displayOrder": n,
                    "archived": False,
                    "metadata": {"isClosed": str(stage.startswith("closed")).lower()},
                }
                for n, stage in enumerate(stages)
            ],
        }
        for order, (ident, stages) in enumerate(pipelines(fake).items())
    ]
    return 200, {"results": results}


@route("GET", PROPERTIES)
def list_deal_properties(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {"results": [found.render() for found in deal_properties(fake).values()]}


@route("POST", PROPERTIES)
def create_deal_property(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    state = _state(fake)
    made = new_property(fake, "POST deal properties", body, state["groups"], state["properties"])
    state["properties"][made.name] = made
    return 201, made.render()


@route("GET", f"{PROPERTIES}/groups")
def list_deal_groups(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 200, {"results": [dict(group) for group in _state(fake)["groups"].values()]}


@route("POST", f"{PROPERTIES}/groups")
def create_deal_group(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
    return 201, new_group(fake, "POST deal groups", body, _state(fake)["groups"])
