"""Tests for the warehouse HTTP contract, one rule per test, against a real server."""

from __future__ import annotations

import http.client
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.warehouse_mock.support import (
    HTTP_TIMEOUT,
    assert_problem,
    key_for,
    new_order_id,
    post_shipment,
    shipment_body,
)
from warehouse_mock.service import request_fingerprint
from warehouse_mock.settings import DEFAULT_CLIENT_ID
from warehouse_mock.storage import Claim, Storage
from warehouse_mock.testing import WarehouseHandle

SHIPMENT_FIELDS = {
    "shipment_id",
    "idempotency_key",
    "ship_to",
    "order_id",
    "line_id",
    "sku",
    "quantity",
    "status",
    "created_at",
    "cancelled_at",
}


def get(
    warehouse: WarehouseHandle, path: str, token: str | None = None, **kw: Any
) -> requests.Response:
    """GET ``path`` with a bearer token (the client's unless given)."""
    return requests.get(
        f"{warehouse.base_url}{path}",
        headers={"Authorization": f"Bearer {token or warehouse.api_token}"},
        timeout=HTTP_TIMEOUT,
        **kw,
    )


def hold_claim(
    storage: Storage,
    warehouse: WarehouseHandle,
    body: dict[str, Any],
    *,
    now: datetime,
    lease: float,
) -> None:
    """Leave an in-flight claim on the body's key, as a request still running (or crashed) would."""
    result = storage.claim(
        scope=DEFAULT_CLIENT_ID,
        idempotency_key=key_for(body),
        fingerprint=request_fingerprint(body),
        lease_seconds=lease,
        now=now,
    )
    assert isinstance(result, Claim)


# --- health and docs ------------------------------------------------------------------


def test_health_answers_200_without_a_token(warehouse: WarehouseHandle) -> None:
    """GET /healthz needs no authentication."""
    response = requests.get(f"{warehouse.base_url}/healthz", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/docs", "/openapi.json"])
def test_openapi_docs_are_served(warehouse: WarehouseHandle, path: str) -> None:
    """The OpenAPI document and its browsable docs are on by default."""
    assert requests.get(f"{warehouse.base_url}{path}", timeout=HTTP_TIMEOUT).status_code == 200


def test_openapi_documents_the_request_body_and_the_key_header(warehouse: WarehouseHandle) -> None:
    """POST /v1/shipments shows its body schema and its required Idempotency-Key."""
    spec = requests.get(f"{warehouse.base_url}/openapi.json", timeout=HTTP_TIMEOUT).json()
    operation = spec["paths"]["/v1/shipments"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"order_id", "line_id", "sku", "quantity", "ship_to"}
    assert {"name": "Idempotency-Key", "required": True}.items() <= operation["parameters"][
        0
    ].items()


# --- creating and reading shipments ---------------------------------------------------


def test_new_key_creates_a_shipment_with_201(warehouse: WarehouseHandle) -> None:
    """A first request answers 201 with the shipment, not marked as a replay."""
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key_for(body))
    assert response.status_code == 201
    shipment = response.json()
    assert set(shipment) == SHIPMENT_FIELDS
    assert {k: shipment[k] for k in ("order_id", "line_id", "sku", "quantity")} == {
        k: body[k] for k in ("order_id", "line_id", "sku", "quantity")
    }
    assert shipment["status"] == "created"
    assert response.headers["Location"] == f"/v1/shipments/{shipment['shipment_id']}"
    assert "Idempotent-Replayed" not in response.headers


def test_created_shipment_is_found_by_id_with_the_body_first_sent(
    warehouse: WarehouseHandle,
) -> None:
    """GET /v1/shipments/{id} shows the shipment exactly as the 201 did."""
    body = shipment_body(new_order_id())
    created = post_shipment(warehouse, body, key_for(body)).json()
    response = get(warehouse, f"/v1/shipments/{created['shipment_id']}")
    assert response.status_code == 200
    assert response.json() == created


def test_shipments_are_listed_by_order_id(warehouse: WarehouseHandle) -> None:
    """GET /v1/shipments?order_id=X lists each line's shipment of that order only."""
    order_id = new_order_id()
    ids = set()
    for line_id in ("1", "2"):
        body = shipment_body(order_id, line_id)
        ids.add(post_shipment(warehouse, body, key_for(body)).json()["shipment_id"])
    post_shipment(warehouse, shipment_body(other := new_order_id()), f"{other}:1")

    response = get(warehouse, "/v1/shipments", params={"order_id": order_id})
    assert response.status_code == 200
    assert {s["shipment_id"] for s in response.json()["shipments"]} == ids


def test_unknown_order_lists_no_shipments(warehouse: WarehouseHandle) -> None:
    """An order without shipments is an empty list, not an error."""
    response = get(warehouse, "/v1/shipments", params={"order_id": new_order_id()})
    assert response.status_code == 200
    assert response.json() == {"shipments": []}


def test_admin_token_can_read_shipments(warehouse: WarehouseHandle) -> None:
    """Reads accept the admin token as well as a client token."""
    body = shipment_body(new_order_id())
    post_shipment(warehouse, body, key_for(body))
    response = get(
        warehouse, "/v1/shipments", warehouse.admin_token, params={"order_id": body["order_id"]}
    )
    assert len(response.json()["shipments"]) == 1


def test_listing_without_order_id_is_a_422_problem(warehouse: WarehouseHandle) -> None:
    """The order_id query parameter is required."""
    assert_problem(get(warehouse, "/v1/shipments"), 422, "/problems/invalid-request")


def test_unknown_shipment_id_is_a_404_problem(warehouse: WarehouseHandle) -> None:
    """A shipment id that does not exist answers 404 not-found."""
    assert_problem(get(warehouse, "/v1/shipments/shp_nope"), 404, "/problems/not-found")


def test_unknown_path_is_a_404_problem(warehouse: WarehouseHandle) -> None:
    """The framework's own 404 is a problem document too."""
    assert_problem(get(warehouse, "/v2/nothing-here"), 404, "/problems/not-found")


def test_wrong_method_is_a_405_problem(warehouse: WarehouseHandle) -> None:
    """The framework's own 405 is a problem document too, with its Allow header."""
    response = requests.delete(f"{warehouse.base_url}/healthz", timeout=HTTP_TIMEOUT)
    assert_problem(response, 405, "/problems/method-not-allowed")
    assert response.headers["Allow"] == "GET"


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-valid-token", "Basic dXNlcjpwYXNz", "Bearer", "not-a-valid-token"],
)
def test_missing_or_wrong_token_is_a_401_problem(
    warehouse: WarehouseHandle, authorization: str | None
) -> None:
    """Creating a shipment without a valid client bearer token answers 401."""
    body = shipment_body(new_order_id())
    headers = {"Idempotency-Key": key_for(body)}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = requests.post(
        f"{warehouse.base_url}/v1/shipments", json=body, headers=headers, timeout=HTTP_TIMEOUT
    )
    assert_problem(response, 401, "/problems/unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert warehouse.shipments(body["order_id"]) == []


@pytest.mark.parametrize("path", ["/v1/shipments?order_id=ORD-1", "/v1/shipments/shp_1"])
def test_reads_without_a_valid_token_are_a_401_problem(
    warehouse: WarehouseHandle, path: str
) -> None:
    """Reading shipments needs a token too."""
    assert_problem(get(warehouse, path, token="not-a-valid-token"), 401, "/problems/unauthorized")


def test_unauthenticated_request_learns_nothing_about_its_body(warehouse: WarehouseHandle) -> None:
    """Authentication is checked before the key and the body: garbage without a token is a 401."""
    response = requests.post(
        f"{warehouse.base_url}/v1/shipments", data=b"{not json", timeout=HTTP_TIMEOUT
    )
    assert_problem(response, 401, "/problems/unauthorized")


def test_admin_token_cannot_create_shipments(warehouse: WarehouseHandle) -> None:
    """Shipments are created with a client token only; the admin token gets 403."""
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key_for(body), token=warehouse.admin_token)
    assert_problem(response, 403, "/problems/forbidden")


# --- Idempotency-Key ------------------------------------------------------------------


def test_missing_idempotency_key_is_a_400_problem(warehouse: WarehouseHandle) -> None:
    """A POST without Idempotency-Key answers 400 and creates nothing."""
    body = shipment_body(new_order_id())
    response = requests.post(
        f"{warehouse.base_url}/v1/shipments",
        json=body,
        headers={"Authorization": f"Bearer {warehouse.api_token}"},
        timeout=HTTP_TIMEOUT,
    )
    assert_problem(response, 400, "/problems/missing-idempotency-key")
    assert warehouse.shipments(body["order_id"]) == []


@pytest.mark.parametrize(
    "key", ["", "k" * 256, "clé-1", "tab\there"], ids=["empty", "256-chars", "non-ascii", "tab"]
)
def test_malformed_idempotency_key_is_a_400_problem(warehouse: WarehouseHandle, key: str) -> None:
    """A key that is not 1-255 printable ASCII characters answers 400."""
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key)
    assert_problem(response, 400, "/problems/missing-idempotency-key")


@pytest.mark.parametrize("key", ["k" * 255, "a b/c?d#e~!\"'{}"], ids=["255-chars", "punctuation"])
def test_any_printable_ascii_key_up_to_255_characters_is_accepted(
    warehouse: WarehouseHandle, key: str
) -> None:
    """Every printable ASCII character, spaces inside included, may appear in a key."""
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, f"{body['order_id']}{key}"[:255])
    assert response.status_code == 201, response.text


def test_two_idempotency_key_headers_are_a_400_problem(warehouse: WarehouseHandle) -> None:
    """A request may carry one key only."""
    url = urlsplit(warehouse.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=HTTP_TIMEOUT)
    data = json.dumps(shipment_body(new_order_id())).encode()
    conn.putrequest("POST", "/v1/shipments")
    for name, value in [
        ("Authorization", f"Bearer {warehouse.api_token}"),
        ("Idempotency-Key", "first-key"),
        ("Idempotency-Key", "second-key"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
    ]:
        conn.putheader(name, value)
    conn.endheaders(data)
    response = conn.getresponse()
    problem = json.loads(response.read())
    conn.close()
    assert (response.status, problem["type"]) == (400, "/problems/missing-idempotency-key")


# --- the body ---------------------------------------------------------------------------


def _without(field: str) -> dict[str, Any]:
    body = shipment_body("ORD-X")
    del body[field]
    return body


@pytest.mark.parametrize(
    ("body", "bad_field"),
    [
        (_without("sku"), "sku"),
        (shipment_body("ORD-X", quantity=0), "quantity"),
        (shipment_body("ORD-X", quantity=10_001), "quantity"),
        (shipment_body("ORD-X", quantity="2"), "quantity"),
        (shipment_body("ORD-X", quantity=2.0), "quantity"),
        (shipment_body("ORD-X", quantity=True), "quantity"),
        (shipment_body("has space"), "order_id"),
        (shipment_body("ORD-X", line_id=""), "line_id"),
        (shipment_body("ORD-X", sku="S" * 65), "sku"),
        (shipment_body("ORD-X", ship_to="Berlin"), "ship_to"),
        (shipment_body("ORD-X", gift_wrap=True), "gift_wrap"),
    ],
    ids=[
        "missing-sku",
        "quantity-0",
        "quantity-too-big",
        "quantity-string",
        "quantity-float",
        "quantity-bool",
        "order-id-pattern",
        "empty-line-id",
        "sku-too-long",
        "ship-to-not-object",
        "unknown-field",
    ],
)
def test_invalid_body_is_a_422_problem_listing_the_errors(
    warehouse: WarehouseHandle, body: dict[str, Any], bad_field: str
) -> None:
    """A body that breaks the schema answers 422 invalid-request naming each bad field."""
    response = post_shipment(warehouse, body, f"{new_order_id()}:1")
    problem = assert_problem(response, 422, "/problems/invalid-request")
    assert ["body", bad_field] in [e["loc"][:2] for e in problem["errors"]]
    assert bad_field in problem["detail"]


def test_every_error_of_the_body_is_listed(warehouse: WarehouseHandle) -> None:
    """Several bad fields give one listed error each, nested fields with their path."""
    body = shipment_body("ORD-X", quantity=0)
    body["ship_to"]["country"] = "de"
    response = post_shipment(warehouse, body, f"{new_order_id()}:1")
    problem = assert_problem(response, 422, "/problems/invalid-request")
    assert sorted(e["loc"] for e in problem["errors"]) == [
        ["body", "quantity"],
        ["body", "ship_to", "country"],
    ]


@pytest.mark.parametrize("raw", [b"", b"{not json", b'{"quantity": NaN}', b"\xff\xfe"])
def test_body_that_is_not_json_is_a_422_problem(warehouse: WarehouseHandle, raw: bytes) -> None:
    """A body that is not a JSON document answers 422 invalid-request."""
    response = post_shipment(warehouse, raw, f"{new_order_id()}:1")
    assert_problem(response, 422, "/problems/invalid-request")


def test_refused_request_is_not_stored_under_its_key(warehouse: WarehouseHandle) -> None:
    """After an invalid body, the same key with a fixed body creates the shipment."""
    body = shipment_body(new_order_id())
    key = key_for(body)
    assert post_shipment(warehouse, {**body, "quantity": 0}, key).status_code == 422
    response = post_shipment(warehouse, body, key)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers


# --- idempotency ------------------------------------------------------------------------


def test_same_key_and_body_replays_the_stored_response(warehouse: WarehouseHandle) -> None:
    """A repeated request answers the stored status and body, marked as a replay."""
    body = shipment_body(new_order_id())
    first = post_shipment(warehouse, body, key_for(body))
    again = post_shipment(warehouse, body, key_for(body))
    assert again.status_code == first.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_same_json_value_in_another_key_order_and_spacing_is_a_replay(
    warehouse: WarehouseHandle,
) -> None:
    """ "Same body" means the same JSON value: key order, spacing and escapes do not matter."""
    body = shipment_body(new_order_id())
    body["ship_to"]["name"] = "Zoë Müller"
    first = post_shipment(warehouse, json.dumps(body, ensure_ascii=False).encode(), key_for(body))
    reordered = dict(reversed(list(body.items())))
    reordered["ship_to"] = dict(reversed(list(body["ship_to"].items())))
    raw = json.dumps(reordered, indent=4, separators=(" ,  ", " :  "), ensure_ascii=True).encode()

    again = post_shipment(warehouse, raw, key_for(body))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["shipment_id"] == first.json()["shipment_id"]


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": 3},
        {"sku": "MUG-BLUE"},
        {"ship_to": {**shipment_body("x")["ship_to"], "city": "Paris"}},
        {"ship_to": {**shipment_body("x")["ship_to"], "line2": "Apt 4"}},
    ],
    ids=["quantity", "sku", "address", "added-field"],
)
def test_same_key_with_a_different_body_is_a_422_mismatch(
    warehouse: WarehouseHandle, change: dict[str, Any]
) -> None:
    """Reusing a key with another body answers 422 and leaves the first shipment alone."""
    body = shipment_body(new_order_id())
    first = post_shipment(warehouse, body, key_for(body)).json()
    response = post_shipment(warehouse, {**body, **change}, key_for(body))
    assert_problem(response, 422, "/problems/idempotency-key-mismatch")
    assert [s["shipment_id"] for s in warehouse.shipments(body["order_id"])] == [
        first["shipment_id"]
    ]


def test_keys_are_scoped_per_client(warehouse: WarehouseHandle) -> None:
    """Two clients using the same key get a shipment each."""
    assert warehouse.foreign_api_token is not None
    body = shipment_body(new_order_id())
    mine = post_shipment(warehouse, body, key_for(body))
    theirs = post_shipment(warehouse, body, key_for(body), token=warehouse.foreign_api_token)
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs.headers
    assert mine.json()["shipment_id"] != theirs.json()["shipment_id"]


def test_a_rotated_token_keeps_the_clients_keys(warehouse: WarehouseHandle) -> None:
    """The same key under another token of the same client replays: rotation resets nothing."""
    assert warehouse.rotated_api_token is not None
    body = shipment_body(new_order_id())
    first = post_shipment(warehouse, body, key_for(body))
    again = post_shipment(warehouse, body, key_for(body), token=warehouse.rotated_api_token)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["shipment_id"] == first.json()["shipment_id"]
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_a_client_sees_only_its_own_shipments(warehouse: WarehouseHandle) -> None:
    """Listing and reading by id are scoped to the caller; the admin sees every client's."""
    assert warehouse.foreign_api_token is not None
    body = shipment_body(new_order_id())
    theirs = post_shipment(warehouse, body, key_for(body), token=warehouse.foreign_api_token)
    listed = get(warehouse, "/v1/shipments", params={"order_id": body["order_id"]})
    by_key = get(warehouse, "/v1/shipments", params={"idempotency_key": key_for(body)})
    by_id = get(warehouse, f"/v1/shipments/{theirs.json()['shipment_id']}")
    assert listed.json() == by_key.json() == {"shipments": []}
    assert_problem(by_id, 404, "/problems/not-found")
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_shipments_are_found_by_key_with_their_content(warehouse: WarehouseHandle) -> None:
    """A lookup by key answers the shipment with its key and address, as a client compares it."""
    body = shipment_body(new_order_id())
    created = post_shipment(warehouse, body, key_for(body)).json()
    [found] = get(warehouse, "/v1/shipments", params={"idempotency_key": key_for(body)}).json()[
        "shipments"
    ]
    assert found == created
    assert found["idempotency_key"] == key_for(body)
    assert found["ship_to"] == body["ship_to"]


def test_listing_shipments_needs_a_filter(warehouse: WarehouseHandle) -> None:
    """Without order_id or idempotency_key the listing is a 422, not every shipment."""
    assert_problem(get(warehouse, "/v1/shipments"), 422, "/problems/invalid-request")


def test_same_key_while_the_first_is_in_flight_is_a_409(
    warehouse: WarehouseHandle, warehouse_storage: Storage
) -> None:
    """While another request holds the key's claim, the same request answers 409."""
    body = shipment_body(new_order_id())
    hold_claim(warehouse_storage, warehouse, body, now=datetime.now(UTC), lease=3600)
    response = post_shipment(warehouse, body, key_for(body))
    assert_problem(response, 409, "/problems/request-in-flight")
    assert int(response.headers["Retry-After"]) >= 1
    assert warehouse.shipments(body["order_id"]) == []


def test_other_body_while_the_first_is_in_flight_is_a_422_mismatch(
    warehouse: WarehouseHandle, warehouse_storage: Storage
) -> None:
    """A different body under an in-flight key is a mismatch, final, not a 409 to retry."""
    body = shipment_body(new_order_id())
    hold_claim(warehouse_storage, warehouse, body, now=datetime.now(UTC), lease=3600)
    response = post_shipment(warehouse, {**body, "quantity": 5}, key_for(body))
    assert_problem(response, 422, "/problems/idempotency-key-mismatch")


def test_expired_in_flight_claim_is_taken_over(
    warehouse: WarehouseHandle, warehouse_storage: Storage
) -> None:
    """A claim left by a crashed request stops blocking its key once its lease expired."""
    body = shipment_body(new_order_id())
    crashed_at = datetime.now(UTC) - timedelta(hours=1)
    hold_claim(warehouse_storage, warehouse, body, now=crashed_at, lease=30)
    response = post_shipment(warehouse, body, key_for(body))
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_a_key_past_retention_is_answered_from_its_shipment(
    warehouse: WarehouseHandle, warehouse_storage: Storage
) -> None:
    """Once the stored response is purged, the same request replays the shipment, not a new one."""
    body = shipment_body(new_order_id())
    first = post_shipment(warehouse, body, key_for(body)).json()
    warehouse_storage.purge_expired(older_than=datetime.now(UTC) + timedelta(days=365))
    again = post_shipment(warehouse, body, key_for(body))
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["shipment_id"] == first["shipment_id"]
    other = post_shipment(warehouse, {**body, "quantity": 7}, key_for(body))
    assert_problem(other, 422, "/problems/idempotency-key-mismatch")
    assert len(warehouse.shipments(body["order_id"])) == 1
