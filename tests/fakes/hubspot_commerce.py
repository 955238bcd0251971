"""The fake HubSpot's commerce objects: orders, carts and line items.

Written from HubSpot's public guides (developers.hubspot.com: the orders and carts
guides, the line items guide, the CRM objects batch and search reference; no
machine-readable spec is copied): ``POST /crm/v3/objects/{orders|carts|line_items}/
batch/create`` (inputs of ``properties``, ``associations`` and ``objectWriteTraceId``,
at most 100), ``.../batch/update`` (``id``, ``properties``; one id once a call),
``.../batch/archive`` (``{id}``, 204) and ``.../search`` (filters with ``IN`` take
``values``, at most 100; ``limit`` at most 200; the ``paging.next.after`` cursor).
Associations at create name HUBSPOT_DEFINED type ids, which must fit the object pair
(order: contact 507, line item 513; cart: contact 586, line item 590) and point at an
existing record. Property values are strings and must be properties the object has.
A request the docs do not allow is a violation (tests fail); what HubSpot itself
refuses (an unknown property) is a refusal answered 400 or per input in a 207.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.hubspot import (
    MAX_INPUTS,
    MAX_SEARCH_PAGE,
    ApiError,
    FakeHubSpot,
    Handler,
    _inputs,
    _shape,
    _stamp,
    invalid,
    route,
)

KINDS = ("orders", "carts", "line_items")
COMMON = frozenset({"hs_object_id", "hs_createdate", "hs_lastmodifieddate"})
KNOWN = {
    "orders": COMMON
    | {
        "hs_order_name",
        "hs_currency_code",
        "hs_total_price",
        "hs_subtotal_price",
        "hs_external_order_id",
        "hs_external_order_status",
        "hs_external_created_date",
        "hs_source_store",
        "hs_fulfillment_status",
        "hs_payment_status",
        "hs_order_discount",
        "hs_tax",
        "hs_shipping_cost",
        "hs_order_note",
    },
    "carts": COMMON
    | {
        "hs_cart_name",
        "hs_external_cart_id",
        "hs_external_status",
        "hs_cart_url",
        "hs_source_store",
        "hs_total_price",
        "hs_currency_code",
        "hs_cart_discount",
        "hs_tax",
        "hs_shipping_cost",
        "hs_tags",
    },
    "line_items": COMMON
    | {
        "name",
        "quantity",
        "price",
        "amount",
        "discount",
        "hs_sku",
        "hs_product_id",
        "hs_line_item_currency_code",
        "description",
    },
}
# (from kind, type id) -> the kind it points at
ASSOCIATION_TYPES = {
    ("orders", 507): "contacts",
    ("orders", 513): "line_items",
    ("carts", 586): "contacts",
    ("carts", 590): "line_items",
    ("deals", 3): "contacts",
    ("deals", 19): "line_items",
    ("line_items", 20): "deals",
}
# kinds whose properties the account holds (deals: apps create their own), by kind: the
# names known now, instead of KNOWN's fixed set (hubspot_deals fills it)
ACCOUNT_PROPERTIES: dict[str, Callable[[FakeHubSpot], Iterable[str]]] = {}
CREATE_KEYS = frozenset({"properties", "associations", "objectWriteTraceId"})
UPDATE_KEYS = frozenset({"id", "idProperty", "properties", "objectWriteTraceId"})
SEARCH_KEYS = frozenset({"filterGroups", "sorts", "properties", "limit", "after", "query"})


@dataclass
class CommerceObject:
    id: str
    kind: str
    properties: dict[str, str]
    associations: set[tuple[str, str, int]] = field(default_factory=set)  # (kind, id, type)
    archived: bool = False

    def render(self, names: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        props = dict(self.properties)
        if names is not None:
            props = {n: self.properties.get(n) for n in names}  # type: ignore[misc]
        return {
            "id": self.id,
            "properties": props,
            "createdAt": _stamp(datetime.now(UTC)),
            "updatedAt": _stamp(datetime.now(UTC)),
            "archived": self.archived,
            **extra,
        }


# per kind, what HubSpot refuses in an input's properties beyond an unknown name (deals:
# a stage outside the deal's pipeline, a value of the wrong type), given the object an
# update changes: why, or None
Refusal = Callable[[FakeHubSpot, dict[str, str], CommerceObject | None], str | None]
REFUSALS: dict[str, Refusal] = {}


def objects(fake: FakeHubSpot, kind: str) -> dict[str, CommerceObject]:
    """The fake's objects of one kind, archived ones included."""
    found: dict[str, dict[str, CommerceObject]] = fake.__dict__.setdefault("commerce", {})
    return found.setdefault(kind, {})


def written(fake: FakeHubSpot) -> Counter[str]:
    """Objects written per kind and verb ("orders create": n), for the bench's floor."""
    found: Counter[str] = fake.__dict__.setdefault("commerce_written", Counter())
    return found


def live(fake: FakeHubSpot, kind: str) -> list[CommerceObject]:
    return [o for o in objects(fake, kind).values() if not o.archived]


def _exists(fake: FakeHubSpot, kind: str, ident: str) -> bool:
    if kind == "contacts":
        found = fake.contacts_by_id.get(ident)
        return found is not None and not found.archived
    made = objects(fake, kind).get(ident)
    return made is not None and not made.archived


def known(fake: FakeHubSpot, kind: str) -> frozenset[str]:
    """The properties objects of ``kind`` have in the fake's account."""
    held = ACCOUNT_PROPERTIES.get(kind)
    return KNOWN[kind] if held is None else frozenset(held(fake))


def _property_error(fake: FakeHubSpot, kind: str, name: str, trace: Any) -> dict[str, Any] | None:
    if name in known(fake, kind):
        return None
    context: dict[str, Any] = {"propertyName": [name]}
    if trace is not None:
        context["objectWriteTraceId"] = [trace]
    return {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": f"Property {name!r} does not exist",
        "code": "PROPERTY_DOESNT_EXIST",
        "context": context,
    }


def _properties(fake: FakeHubSpot, what: str, entry: dict[str, Any]) -> dict[str, str]:
    properties = entry.get("properties", {})
    _shape(fake, what, isinstance(properties, dict), "properties is not an object")
    for name, value in properties.items():
        _shape(fake, what, isinstance(value, str), f"{name}={value!r} is not a string")
    return dict(properties)


def _associations(fake: FakeHubSpot, what: str, kind: str, entry: dict[str, Any]) -> list[Any]:
    found = []
    for item in entry.get("associations") or []:
        ok = isinstance(item, dict) and set(item) == {"to", "types"}
        _shape(fake, what, ok, "an association is {to, types}")
        to = item["to"]
        _shape(fake, what, isinstance(to, dict) and isinstance(to.get("id"), str), "to.id")
        for kind_of in item["types"]:
            category = kind_of.get("associationCategory")
            type_id = kind_of.get("associationTypeId")
            _shape(fake, what, category == "HUBSPOT_DEFINED", f"category {category!r}")
            target = ASSOCIATION_TYPES.get((kind, type_id))
            _shape(fake, what, target is not None, f"association type {type_id} from {kind}")
            found.append((target, to["id"], type_id))
    return found


def _create(kind: str) -> Handler:
    def handler(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
        what = f"POST {kind}/batch/create"
        inputs = _inputs(fake, what, body, frozenset({"inputs"}))
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for entry in inputs:
            _shape(fake, what, isinstance(entry, dict), "an input is not an object")
            unknown = set(entry) - CREATE_KEYS
            _shape(fake, what, not unknown, f"unknown input fields {sorted(unknown)}")
            properties = _properties(fake, what, entry)
            links = _associations(fake, what, kind, entry)
            trace = entry.get("objectWriteTraceId")
            problems = [p for n in properties if (p := _property_error(fake, kind, n, trace))]
            refusal = REFUSALS[kind](fake, properties, None) if kind in REFUSALS else None
            if refusal is not None and not problems:
                problems.append(_refused(refusal, trace))
            for target, ident, _ in links:
                if not _exists(fake, target, ident):
                    problems.append(
                        {
                            "status": "error",
                            "category": "VALIDATION_ERROR",
                            "message": f"No {target} record {ident} to associate",
                            "context": {"objectWriteTraceId": [trace]},
                        }
                    )
            if problems:
                errors.extend(problems)
                continue
            ident = str(fake._next_id)
            fake._next_id += 1
            made = CommerceObject(ident, kind, properties, set(links))
            objects(fake, kind)[ident] = made
            written(fake)[f"{kind} create"] += 1
            extra = {"objectWriteTraceId": trace} if trace is not None else {}
            results.append(made.render(**extra))
        return _answer(results, errors)

    handler.__name__ = f"create_{kind}"
    return handler


def _update(kind: str) -> Handler:
    def handler(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
        what = f"POST {kind}/batch/update"
        inputs = _inputs(fake, what, body, frozenset({"inputs"}))
        seen: set[str] = set()
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for entry in inputs:
            _shape(fake, what, isinstance(entry, dict), "an input is not an object")
            unknown = set(entry) - UPDATE_KEYS
            _shape(fake, what, not unknown, f"unknown input fields {sorted(unknown)}")
            ident = entry.get("id")
            _shape(fake, what, isinstance(ident, str), "an input's id is not a string")
            _shape(fake, what, ident not in seen, f"Duplicate IDs found in batch input: {ident}")
            seen.add(ident)
            properties = _properties(fake, what, entry)
            trace = entry.get("objectWriteTraceId")
            problems = [p for n in properties if (p := _property_error(fake, kind, n, trace))]
            if problems:
                raise invalid("Property values were not valid", errors=problems)
            made = objects(fake, kind).get(ident)
            if kind in REFUSALS and made is not None and not made.archived:
                refusal = REFUSALS[kind](fake, properties, made)
                if refusal is not None:
                    raise invalid(refusal, errors=[_refused(refusal, trace)])
            if made is None or made.archived:
                context = {"objectWriteTraceId": [trace]} if trace is not None else {"ids": [ident]}
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": f"No {kind} {ident}",
                        "context": context,
                    }
                )
                continue
            made.properties.update(properties)
            written(fake)[f"{kind} update"] += 1
            extra = {"objectWriteTraceId": trace} if trace is not None else {}
            results.append(made.render(**extra))
        return _answer(results, errors)

    handler.__name__ = f"update_{kind}"
    return handler


def _archive(kind: str) -> Handler:
    def handler(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
        what = f"POST {kind}/batch/archive"
        for entry in _inputs(fake, what, body, frozenset({"inputs"})):
            ok = isinstance(entry, dict) and set(entry) == {"id"} and isinstance(entry["id"], str)
            _shape(fake, what, ok, "inputs are {id: string}")
            made = objects(fake, kind).get(entry["id"])
            if made is not None:
                made.archived = True
                written(fake)[f"{kind} archive"] += 1
        return 204, None

    handler.__name__ = f"archive_{kind}"
    return handler


def _search(kind: str) -> Handler:
    def handler(fake: FakeHubSpot, params: dict[str, str], body: Any) -> tuple[int, Any]:
        what = f"POST {kind}/search"
        _shape(fake, what, isinstance(body, dict), "the body is not an object")
        unknown = set(body) - SEARCH_KEYS
        _shape(fake, what, not unknown, f"unknown fields {sorted(unknown)}")
        limit = body.get("limit", 10)
        ok = isinstance(limit, int) and 0 < limit <= MAX_SEARCH_PAGE
        _shape(fake, what, ok, f"limit {limit!r}")
        tests = []
        for group in body.get("filterGroups") or []:
            for test in group.get("filters") or []:
                name, operator = test.get("propertyName"), test.get("operator")
                _shape(fake, what, name in known(fake, kind), f"unknown property {name!r}")
                _shape(fake, what, operator in ("IN", "EQ"), f"operator {operator!r}")
                if operator == "IN":
                    values = test.get("values")
                    ok = isinstance(values, list) and 0 < len(values) <= MAX_INPUTS
                    _shape(fake, what, ok, "IN takes 1 to 100 values")
                    tests.append((name, {str(v) for v in values}))
                else:
                    tests.append((name, {str(test.get("value"))}))
        matched = [
            o
            for o in live(fake, kind)
            if all(o.properties.get(name) in values for name, values in tests)
        ]
        start = int(body.get("after") or 0)
        page = matched[start : start + limit]
        names = body.get("properties") or None
        answer: dict[str, Any] = {
            "total": len(matched),
            "results": [o.render(names) for o in page],
        }
        if start + limit < len(matched):
            answer["paging"] = {"next": {"after": str(start + limit)}}
        return 200, answer

    handler.__name__ = f"search_{kind}"
    return handler


def _refused(message: str, trace: Any) -> dict[str, Any]:
    context = {"objectWriteTraceId": [trace]} if trace is not None else {}
    return {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": message,
        "context": context,
    }


def _answer(results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> tuple[int, Any]:
    now = _stamp(datetime.now(UTC))
    answer: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": now,
        "completedAt": now,
    }
    if errors:
        if not results and all(e.get("code") == "PROPERTY_DOESNT_EXIST" for e in errors):
            raise ApiError(400, "VALIDATION_ERROR", errors[0]["message"], errors=errors)
        answer["errors"], answer["numErrors"] = errors, len(errors)
        return 207, answer
    return 201, answer


for _kind in KINDS:
    route("POST", f"/crm/v3/objects/{_kind}/batch/create")(_create(_kind))
    route("POST", f"/crm/v3/objects/{_kind}/batch/update")(_update(_kind))
    route("POST", f"/crm/v3/objects/{_kind}/batch/archive")(_archive(_kind))
    route("POST", f"/crm/v3/objects/{_kind}/search")(_search(_kind))
