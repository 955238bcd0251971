"""Finding many people's Klaviyo profiles at once, by id, e-mail address or phone number.

``GET /api/profiles`` with ``any(<field>,[...])``, 100 values a call (its largest page, so
one page answers each call), the calls side by side in the destination's pool. Used when
an import job is complete (its people's ids, creation times and subscriptions) and for
people deleted at the source.

Klaviyo puts this endpoint in its profiles group (75/s, 750/m). The import job's own
``/profiles`` collection, which answers the same for a job, is in the import jobs group
(10/s, 150/m) and pages through the job one after another: reading back a first sync of
100,000 people there takes more than six minutes of that group's budget, and about one
minute here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, Literal

from connectors.klaviyo.client import PAGE, KlaviyoApi
from connectors.klaviyo.payloads import quoted

Field = Literal["id", "email", "phone_number"]


def any_filters(field: Field, values: Sequence[str]) -> list[str]:
    """One ``any`` filter per 100 of ``values``, each value once, in the order given."""
    unique = list(dict.fromkeys(values))
    return [
        f"any({field},[{','.join(quoted(v) for v in unique[start : start + PAGE])}])"
        for start in range(0, len(unique), PAGE)
    ]


def find(
    api: KlaviyoApi,
    field: Field,
    values: Sequence[str],
    fields: Sequence[str],
    pool: Executor,
) -> Iterator[dict[str, Any]]:
    """The profiles whose ``field`` is one of ``values`` (with ``fields`` and their
    subscriptions); those Klaviyo does not have are simply not among them."""
    return api.profiles_side_by_side(any_filters(field, values), fields, pool)
