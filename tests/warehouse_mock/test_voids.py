"""Tests for ``POST /v1/voids`` and the 410 of a voided key, against a real server."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import requests

from tests.warehouse_mock.support import (
    HTTP_TIMEOUT,
    assert_problem,
    key_for,
    new_order_id,
    post_shipment,
    post_void,
    shipment_body,
)
from warehouse_mock.testing import WarehouseHandle

KEY_VOIDED = "/problems/key-voided"


def get(warehouse: WarehouseHandle, path: str, **params: str) -> requests.Response:
    """GET ``path`` with the client token."""
    return requests.get(
        f"{warehouse.base_url}{path}",
        headers={"Authorization": f"Bearer {warehouse.api_token}"},
        params=params,
        timeout=HTTP_TIMEOUT,
    )


def shipments_by_key(warehouse: WarehouseHandle, key: str) -> list[dict[str, Any]]:
    """The caller's shipments under ``key`` (GET /v1/shipments?idempotency_key=...)."""
    response = get(warehouse, "/v1/shipments", idempotency_key=key)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["shipments"]
    return result


def test_voiding_an_unused_key_answers_its_tombstone(warehouse: WarehouseHandle) -> None:
    """A key never used is voided: 200 with the key, the time, the reason and no shipment."""
    key = key_for(shipment_body(new_order_id()))
    response = post_void(warehouse, key, "line cancelled by operator")
    assert response.status_code == 200, response.text
    void = response.json()
    assert set(void) == {"idempotency_key", "voided_at", "reason", "shipment"}
    assert (void["idempotency_key"], void["reason"], void["shipment"]) == (
        key,
        "line cancelled by operator",
        None,
    )
    assert datetime.fromisoformat(void["voided_at"]).tzinfo is not None


@pytest.mark.parametrize("same_body", [True, False], ids=["same-body", "other-body"])
def test_post_under_a_voided_key_is_a_410_and_creates_nothing(
    warehouse: WarehouseHandle, same_body: bool
) -> None:
    """After a void, POST /v1/shipments with the key answers 410 key-voided, whatever the body."""
    body = shipment_body(new_order_id())
    key = key_for(body)
    post_void(warehouse, key)
    sent = body if same_body else shipment_body(body["order_id"], sku="TEE-L")
    problem = assert_problem(post_shipment(warehouse, sent, key), 410, KEY_VOIDED)
    assert problem["title"] == "Idempotency key voided"
    assert key in problem["detail"]
    assert warehouse.shipments(body["order_id"]) == []


def test_voiding_a_shipped_key_cancels_its_shipment(warehouse: WarehouseHandle) -> None:
    """The shipment under the key is answered cancelled, and every read shows it so."""
    body = shipment_body(new_order_id())
    key = key_for(body)
    created = post_shipment(warehouse, body, key).json()
    assert created["cancelled_at"] is None

    void = post_void(warehouse, key).json()
    shipment = void["shipment"]
    assert shipment["shipment_id"] == created["shipment_id"]
    assert shipment["status"] == "cancelled"
    assert shipment["cancelled_at"] == void["voided_at"]
    assert shipments_by_key(warehouse, key) == [shipment]
    assert get(warehouse, f"/v1/shipments/{created['shipment_id']}").json() == shipment
    assert_problem(post_shipment(warehouse, body, key), 410, KEY_VOIDED)


def test_voiding_again_answers_the_first_void(warehouse: WarehouseHandle) -> None:
    """A repeated void is a 200 with the first time and reason."""
    key = key_for(shipment_body(new_order_id()))
    first = post_void(warehouse, key, "first reason").json()
    again = post_void(warehouse, key, "second reason")
    assert again.status_code == 200
    assert again.json() == first


def test_a_void_touches_only_the_callers_keys(warehouse: WarehouseHandle) -> None:
    """Another client's key of the same name still ships after this client voids it."""
    assert warehouse.foreign_api_token is not None
    body = shipment_body(new_order_id())
    key = key_for(body)
    post_void(warehouse, key)
    other = post_shipment(warehouse, body, key, token=warehouse.foreign_api_token)
    assert other.status_code == 201, other.text


def test_a_rotated_token_sees_the_void_of_its_client(warehouse: WarehouseHandle) -> None:
    """A void made with one token of a client holds for its other tokens."""
    assert warehouse.rotated_api_token is not None
    body = shipment_body(new_order_id())
    post_void(warehouse, key_for(body), token=warehouse.rotated_api_token)
    assert_problem(post_shipment(warehouse, body, key_for(body)), 410, KEY_VOIDED)


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "no key"},
        {"idempotency_key": "", "reason": "empty key"},
        {"idempotency_key": "k" * 256, "reason": "long key"},
        {"idempotency_key": "ORD-1:\u00e9", "reason": "non-ASCII key"},
        {"idempotency_key": "ORD-1:\n", "reason": "control character"},
        {"idempotency_key": "ORD-1:1"},
        {"idempotency_key": "ORD-1:1", "reason": ""},
        {"idempotency_key": "ORD-1:1", "reason": "r" * 501},
        {"idempotency_key": "ORD-1:1", "reason": "x", "extra": 1},
        {"idempotency_key": 7, "reason": "number"},
    ],
    ids=[
        "no-key",
        "empty-key",
        "256-char-key",
        "non-ascii-key",
        "control-char-key",
        "no-reason",
        "empty-reason",
        "501-char-reason",
        "unknown-field",
        "key-not-a-string",
    ],
)
def test_invalid_void_is_a_422_problem(warehouse: WarehouseHandle, body: dict[str, Any]) -> None:
    """A missing or malformed key or reason is refused with the invalid-request problem."""
    assert_problem(post_void(warehouse, "", body=body), 422, "/problems/invalid-request")


def test_void_body_that_is_not_json_is_a_422_problem(warehouse: WarehouseHandle) -> None:
    """A body that is not JSON is refused like any other invalid body."""
    assert_problem(post_void(warehouse, "", body=b"{nope"), 422, "/problems/invalid-request")


def test_reason_of_500_characters_and_key_of_255_are_accepted(warehouse: WarehouseHandle) -> None:
    """The limits are inclusive: 255 printable ASCII characters, a reason of 500."""
    key = f"{new_order_id()}:" + "k" * 200 + " ~!"
    response = post_void(warehouse, key[:255], "r" * 500)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("token", [None, "not-a-valid-token"], ids=["missing", "wrong"])
def test_void_without_a_valid_token_is_a_401_problem(
    warehouse: WarehouseHandle, token: str | None
) -> None:
    """No void without a client's bearer token."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = requests.post(
        f"{warehouse.base_url}/v1/voids",
        json={"idempotency_key": "ORD-1:1", "reason": "x"},
        headers=headers,
        timeout=HTTP_TIMEOUT,
    )
    assert_problem(response, 401, "/problems/unauthorized")


def test_admin_token_cannot_void(warehouse: WarehouseHandle) -> None:
    """The admin token is not a client: a void with it is a 403 and voids nothing."""
    body = shipment_body(new_order_id())
    response = post_void(warehouse, key_for(body), token=warehouse.admin_token)
    assert_problem(response, 403, "/problems/forbidden")
    assert post_shipment(warehouse, body, key_for(body)).status_code == 201


def test_openapi_documents_the_void_and_the_410(warehouse: WarehouseHandle) -> None:
    """The void's body schema and the shipments' 410 are in the OpenAPI document."""
    spec = requests.get(f"{warehouse.base_url}/openapi.json", timeout=HTTP_TIMEOUT).json()
    void = spec["paths"]["/v1/voids"]["post"]
    schema = void["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"idempotency_key", "reason"}
    assert "410" in spec["paths"]["/v1/shipments"]["post"]["responses"]
