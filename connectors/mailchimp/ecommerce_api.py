"""The few e-commerce calls crmsync makes, straight through the HTTP seam.

The SDK's ``EcommerceApi`` (this version) has no PUT for orders or products, which are
the idempotent upserts a resent event needs, so these calls skip the SDK: each is one
``HttpClient`` request (pooled connections, retries honouring Retry-After, the key's
concurrency cap, redaction), with a refusal translated here into ``MailchimpApiError``
carrying Mailchimp's title and detail, as the SDK path does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from connectors.http import HttpClient
from connectors.mailchimp.client import MailchimpApiError, json_body


class EcommerceApi:
    """Stores, product variants, orders and carts of Mailchimp's e-commerce API."""

    def __init__(self, http: HttpClient) -> None:
        self._http = http

    # -- stores --------------------------------------------------------------------

    def stores(self, count: int = 1) -> dict[str, Any]:
        """The first ``count`` stores' ids and how many the account has (``check``)."""
        params = {"count": str(count), "fields": "stores.id,total_items"}
        return self._call("GET", "/ecommerce/stores", params=params)

    def get_store(self, store_id: str) -> dict[str, Any]:
        fields = "id,list_id,currency_code,name,is_syncing"
        return self._call("GET", _path("stores", store_id), params={"fields": fields})

    def add_store(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/ecommerce/stores", body)

    def update_store(self, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", _path("stores", store_id), body)

    # -- catalogue -----------------------------------------------------------------

    def put_variant(
        self, store_id: str, product_id: str, variant_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = _path("stores", store_id, "products", product_id, "variants", variant_id)
        return self._call("PUT", path, body)

    def put_product(
        self, store_id: str, product_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self._call("PUT", _path("stores", store_id, "products", product_id), body)

    # -- orders and carts ----------------------------------------------------------

    def put_order(self, store_id: str, order_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PUT", _path("stores", store_id, "orders", order_id), body)

    def patch_order(self, store_id: str, order_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", _path("stores", store_id, "orders", order_id), body)

    def add_cart(self, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("POST", _path("stores", store_id, "carts"), body)

    def get_cart_lines(self, store_id: str, cart_id: str) -> dict[str, Any]:
        fields = "lines.product_id,lines.product_variant_id,lines.quantity,lines.price"
        path = _path("stores", store_id, "carts", cart_id)
        return self._call("GET", path, params={"fields": fields})

    def patch_cart(self, store_id: str, cart_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", _path("stores", store_id, "carts", cart_id), body)

    def delete_cart(self, store_id: str, cart_id: str) -> None:
        self._call("DELETE", _path("stores", store_id, "carts", cart_id))

    # -- plumbing ------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One request; a 4xx the seam hands back (a refusal of this object, not of the
        run) is raised as ``MailchimpApiError``; transient and auth errors are the seam's."""
        headers = {"Accept": "application/json"}
        content = None
        if body is not None:
            content = json_body(dict(body))
            headers["Content-Type"] = "application/json"
        response = self._http.request(
            method, path.lstrip("/"), params=params, content=content, headers=headers
        )
        answer = _json(response.content)
        if response.is_success:
            return answer
        return _raise(response.status_code, answer)


def _path(*parts: str) -> str:
    """``/ecommerce/<parts>`` with every id escaped: a source's ids may hold '/' or '#'."""
    return "/ecommerce/" + "/".join(quote(part, safe="") for part in parts)


def _json(content: bytes) -> dict[str, Any]:
    if not content:
        return {}
    try:
        found = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {"detail": content[:300].decode("utf-8", "replace")}
    return found if isinstance(found, dict) else {}


def _raise(status: int, answer: Mapping[str, Any]) -> dict[str, Any]:
    title, detail = str(answer.get("title", "")), str(answer.get("detail", ""))
    raise MailchimpApiError(status, title, detail)
