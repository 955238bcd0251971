"""The catalogue of profile fields: the names segment rules and mapping files may use.

A profile is a plain ``dict[str, object]`` (cheap to build a million times); this catalogue
says what each key holds, so rules and mappings are checked against it when they load,
not when a profile happens to lack a key. Values in a profile are:

- ``text``: ``str`` or None
- ``integer``: ``int`` (or None where the description says so)
- ``decimal``: ``decimal.Decimal`` in the profile's currency (or None)
- ``boolean``: ``bool``
- ``date``: ``datetime.date`` or None
- ``datetime``: timezone-aware UTC ``datetime.datetime`` or None
- ``list``: ``tuple[str, ...]`` (possibly empty)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

FieldType = Literal["text", "integer", "decimal", "boolean", "date", "datetime", "list"]


@dataclass(frozen=True, slots=True)
class ProfileField:
    name: str
    type: FieldType
    description: str
    nullable: bool = True


_BASE: tuple[ProfileField, ...] = (
    ProfileField(
        "person_key",
        "text",
        "crmsync's key for the person: e:<email>, p:<phone> or s:<source>:<id>",
        False,
    ),
    ProfileField("email", "text", "normalised e-mail address"),
    ProfileField("phone", "text", "phone number in E.164"),
    ProfileField("first_name", "text", "first name"),
    ProfileField("last_name", "text", "last name"),
    ProfileField("full_name", "text", "first and last name"),
    ProfileField("city", "text", "city"),
    ProfileField("region", "text", "region or province"),
    ProfileField("country", "text", "ISO 3166-1 alpha-2 country code"),
    ProfileField("postal_code", "text", "postal code"),
    ProfileField("address1", "text", "street address"),
    ProfileField("language", "text", "preferred language"),
    ProfileField("birthday", "date", "date of birth"),
    ProfileField("birthday_month", "integer", "month of birth, 1-12"),
    ProfileField("birthday_day", "integer", "day of the month of birth"),
    ProfileField("customer_since", "datetime", "when the earliest customer record was created"),
    ProfileField("sources", "list", "names of the sources that know this person", False),
    ProfileField("orders_count", "integer", "orders not cancelled or refunded", False),
    ProfileField("cancelled_orders", "integer", "cancelled or fully refunded orders", False),
    ProfileField("total_spent", "decimal", "spend net of cancellations and refunds", False),
    ProfileField("currency", "text", "currency of every amount in the profile", False),
    ProfileField("first_order_at", "datetime", "time of the first counted order"),
    ProfileField("last_order_at", "datetime", "time of the latest counted order"),
    ProfileField(
        "days_since_last_order",
        "integer",
        "whole days from the latest order to now; None without orders",
    ),
    ProfileField("avg_order_value", "decimal", "total_spent / orders_count; None without orders"),
    ProfileField("discounted_orders", "integer", "counted orders with any discount", False),
    ProfileField("full_price_orders", "integer", "counted orders without a discount", False),
    ProfileField("categories", "list", "categories bought, sorted", False),
    ProfileField("top_category", "text", "the category bought in the most orders"),
    ProfileField("cart_open", "boolean", "has an open, unconverted cart", False),
    ProfileField(
        "cart_abandoned", "boolean", "the open cart is older than the abandonment threshold", False
    ),
    ProfileField("cart_value", "decimal", "value of the open cart"),
    ProfileField("cart_items", "integer", "number of items in the open cart"),
    ProfileField("cart_url", "text", "checkout URL of the open cart"),
    ProfileField("cart_updated_at", "datetime", "last change of the open cart"),
    ProfileField(
        "rfm_recency", "integer", "recency score 1-5 (5 = most recent); None without orders"
    ),
    ProfileField("rfm_frequency", "integer", "frequency score 1-5; None without orders"),
    ProfileField("rfm_monetary", "integer", "monetary score 1-5; None without orders"),
    ProfileField("rfm_score", "text", "the three scores as one string, e.g. '545'"),
    ProfileField(
        "rfm_label", "text", "champions, loyal, potential, new, at_risk, hibernating, lost, or none"
    ),
    ProfileField("lifecycle_stage", "text", "prospect, new, active, at_risk, lapsed"),
    ProfileField("email_consent", "text", "subscribed, unsubscribed or none", False),
    ProfileField("email_consent_at", "datetime", "when the current e-mail consent was recorded"),
    ProfileField("sms_consent", "text", "subscribed, unsubscribed or none", False),
    ProfileField("sms_consent_at", "datetime", "when the current SMS consent was recorded"),
    ProfileField("deleted", "boolean", "deleted or redacted at the source", False),
)

DEFAULT_WINDOWS: tuple[int, ...] = (30, 90, 365)


def window_fields(windows: Iterable[int]) -> tuple[ProfileField, ...]:
    out: list[ProfileField] = []
    for days in windows:
        out.append(
            ProfileField(f"spent_{days}d", "decimal", f"net spend in the last {days} days", False)
        )
        out.append(
            ProfileField(
                f"orders_{days}d", "integer", f"counted orders in the last {days} days", False
            )
        )
    return tuple(out)


def catalogue(windows: Iterable[int] = DEFAULT_WINDOWS) -> dict[str, ProfileField]:
    """Every profile field for a pipeline with these spend/order windows."""
    return {f.name: f for f in (*_BASE, *window_fields(windows))}
