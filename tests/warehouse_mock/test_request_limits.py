"""The warehouse bounds what a request can cost it: size, nesting and the error list."""

from __future__ import annotations

import json
import uuid

import requests

from warehouse_mock.app import MAX_BODY_BYTES, MAX_ERRORS, MAX_JSON_DEPTH
from warehouse_mock.testing import WarehouseHandle


def post(warehouse: WarehouseHandle, body: bytes, **headers: str) -> requests.Response:
    return requests.post(
        f"{warehouse.base_url}/v1/shipments",
        data=body,
        headers={
            "Authorization": f"Bearer {warehouse.api_token}",
            "Idempotency-Key": f"LIMIT-{uuid.uuid4().hex}",
            "Content-Type": "application/json",
            **headers,
        },
        timeout=30,
    )


def test_a_body_over_the_limit_is_refused_413_and_stores_nothing(
    warehouse: WarehouseHandle,
) -> None:
    """A 3 MiB body of 300,000 keys gets a short 413, not a 39 MiB answer."""
    huge = json.dumps({f"k{i}": i for i in range(300_000)}).encode()
    assert len(huge) > MAX_BODY_BYTES
    answer = post(warehouse, huge)
    assert answer.status_code == 413
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.json()["type"] == "/problems/body-too-large"
    assert len(answer.content) < 1000


def test_a_body_streamed_without_a_length_is_cut_at_the_limit(warehouse: WarehouseHandle) -> None:
    """A chunked body is read only up to the limit, then refused."""
    chunks = (b"[" + b"1," * 10_000 for _ in range(10))
    answer = post(warehouse, chunks)  # type: ignore[arg-type]
    assert answer.status_code == 413


def test_deep_nesting_is_refused_422_not_a_500(warehouse: WarehouseHandle) -> None:
    """20,000 nested arrays (past Python's recursion limit), and just past the depth
    limit, are invalid requests."""
    for depth in (20_000, MAX_JSON_DEPTH + 1):
        body = b"[" * depth + b"]" * depth
        answer = post(warehouse, body)
        assert answer.status_code == 422, depth
        assert "nests deeper" in answer.json()["detail"]


def test_the_error_list_of_a_422_is_capped_and_says_how_many_more(
    warehouse: WarehouseHandle,
) -> None:
    """A body with hundreds of unknown fields lists at most MAX_ERRORS of them."""
    body = json.dumps({f"field{i}": i for i in range(300)}).encode()
    answer = post(warehouse, body)
    assert answer.status_code == 422
    problem = answer.json()
    assert len(problem["errors"]) == MAX_ERRORS
    assert "more error(s)" in problem["detail"]
