"""Tests for fault injection over HTTP: the admin endpoints and what each fault does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
from warehouse_mock.faults import FaultInjector
from warehouse_mock.schemas import FaultConfig
from warehouse_mock.settings import Settings
from warehouse_mock.testing import WarehouseHandle, serve_warehouse

DEFAULT_FAULTS = FaultConfig().model_dump(mode="json")


def admin_call(
    warehouse: WarehouseHandle, method: str, token: str | None, **kwargs: Any
) -> requests.Response:
    """Call /_admin/faults with ``token`` (no Authorization header when None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method,
        f"{warehouse.base_url}/_admin/faults",
        headers=headers,
        timeout=HTTP_TIMEOUT,
        **kwargs,
    )


# --- the admin endpoints -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_faults_without_a_token_are_a_401_problem(warehouse: WarehouseHandle, method: str) -> None:
    """The fault endpoints need a token."""
    response = admin_call(warehouse, method, None, json={"error_rate": 1.0})
    assert_problem(response, 401, "/problems/unauthorized")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_faults_with_a_client_token_are_a_403_problem(
    warehouse: WarehouseHandle, method: str
) -> None:
    """A client token may not touch the faults, and a refused PUT changes nothing."""
    response = admin_call(warehouse, method, warehouse.api_token, json={"error_rate": 1.0})
    assert_problem(response, 403, "/problems/forbidden")
    assert warehouse.get_faults() == DEFAULT_FAULTS


def test_put_faults_answers_and_get_shows_the_configuration(warehouse: WarehouseHandle) -> None:
    """PUT /_admin/faults answers the configuration in force, and GET shows it after."""
    answered = warehouse.set_faults(error_rate=0.5, reject_skus=["BAD-*"], seed=4)
    expected = {**DEFAULT_FAULTS, "error_rate": 0.5, "reject_skus": ["BAD-*"], "seed": 4}
    assert answered == expected
    assert warehouse.get_faults() == expected


def test_put_faults_replaces_the_whole_configuration(warehouse: WarehouseHandle) -> None:
    """Fields left out of a PUT fall back to no fault."""
    warehouse.set_faults(error_rate=0.5, latency_ms=100)
    assert warehouse.set_faults(throttle_rate=0.1) == {**DEFAULT_FAULTS, "throttle_rate": 0.1}


def test_delete_faults_turns_every_fault_off(warehouse: WarehouseHandle) -> None:
    """DELETE /_admin/faults resets to the defaults."""
    warehouse.set_faults(error_rate=1.0, timeout_rate=1.0, reject_skus=["*"])
    response = admin_call(warehouse, "DELETE", warehouse.admin_token)
    assert response.json() == DEFAULT_FAULTS
    assert warehouse.get_faults() == DEFAULT_FAULTS


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 1.5},
        {"throttle_rate": -0.1},
        {"latency_ms": -1},
        {"timeout_hang_ms": 10**9},
        {"retry_after_seconds": -1},
        {"reject_skus": "BAD-*"},
        {"seed": "seven"},
        {"eror_rate": 0.1},
    ],
)
def test_invalid_faults_are_a_422_problem(
    warehouse: WarehouseHandle, fields: dict[str, Any]
) -> None:
    """Out-of-range, mistyped or unknown fields are refused, and nothing changes."""
    response = admin_call(warehouse, "PUT", warehouse.admin_token, json=fields)
    problem = assert_problem(response, 422, "/problems/invalid-request")
    assert problem["errors"]
    assert warehouse.get_faults() == DEFAULT_FAULTS


def test_faults_from_the_environment_are_in_force_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAREHOUSE_FAULTS configures the faults before the first request."""
    monkeypatch.setenv("WAREHOUSE_FAULTS", '{"reject_skus": ["BAD-*"], "seed": 1}')
    settings = Settings(
        api_tokens=("client-token-env-test",),
        admin_token="admin-token-env-test",
        database_url=f"sqlite:///{tmp_path / 'w.db'}",
    )
    with serve_warehouse(settings) as warehouse:
        body = shipment_body(new_order_id(), sku="BAD-1")
        assert_problem(post_shipment(warehouse, body, key_for(body)), 422, "/problems/sku-refused")


# --- what each fault does ----------------------------------------------------------------


def test_injected_error_answers_5xx_and_stores_nothing(warehouse: WarehouseHandle) -> None:
    """An injected error is a 500 or 503 problem; the same key later creates the shipment."""
    warehouse.set_faults(error_rate=1.0, seed=3)
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key_for(body))
    expected_type = {500: "/problems/internal-error", 503: "/problems/service-unavailable"}
    assert_problem(response, response.status_code, expected_type[response.status_code])
    warehouse.clear_faults()
    retry = post_shipment(warehouse, body, key_for(body))
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_injected_503_carries_retry_after(warehouse: WarehouseHandle) -> None:
    """An injected 503 tells the client when to come back."""
    # The first seed whose first draw is a 503 (the seed makes the draws reproducible).
    seed = next(
        s
        for s in range(100)
        if FaultInjector(FaultConfig(error_rate=1.0, seed=s)).draw().error_status == 503
    )
    warehouse.set_faults(error_rate=1.0, retry_after_seconds=7, seed=seed)
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key_for(body))
    assert_problem(response, 503, "/problems/service-unavailable")
    assert response.headers["Retry-After"] == "7"


def test_injected_throttle_answers_429_with_retry_after_and_stores_nothing(
    warehouse: WarehouseHandle,
) -> None:
    """A throttled request gets 429 with the configured Retry-After; retried later it ships."""
    warehouse.set_faults(throttle_rate=1.0, retry_after_seconds=3)
    body = shipment_body(new_order_id())
    response = post_shipment(warehouse, body, key_for(body))
    assert_problem(response, 429, "/problems/throttled")
    assert response.headers["Retry-After"] == "3"
    warehouse.clear_faults()
    retry = post_shipment(warehouse, body, key_for(body))
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_refused_sku_is_a_422_problem_and_stores_nothing(warehouse: WarehouseHandle) -> None:
    """A SKU matching reject_skus answers 422 sku-refused; no shipment exists."""
    warehouse.set_faults(reject_skus=["BAD-*"])
    body = shipment_body(new_order_id(), sku="BAD-42")
    assert_problem(post_shipment(warehouse, body, key_for(body)), 422, "/problems/sku-refused")
    assert warehouse.shipments(body["order_id"]) == []


def test_refused_sku_is_not_stored_under_its_key(warehouse: WarehouseHandle) -> None:
    """Once the SKU is no longer refused, the same key and body create the shipment."""
    warehouse.set_faults(reject_skus=["BAD-*"])
    body = shipment_body(new_order_id(), sku="BAD-42")
    post_shipment(warehouse, body, key_for(body))
    warehouse.clear_faults()
    retry = post_shipment(warehouse, body, key_for(body))
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_commit_then_error_answers_500_and_the_retry_replays_the_201(
    warehouse: WarehouseHandle,
) -> None:
    """The shipment is committed despite the 500; the retry gets the stored 201, no second one."""
    warehouse.set_faults(commit_then_error_rate=1.0)
    body = shipment_body(new_order_id())
    assert_problem(post_shipment(warehouse, body, key_for(body)), 500, "/problems/internal-error")
    [stored] = warehouse.shipments(body["order_id"])

    retry = post_shipment(warehouse, body, key_for(body))
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == stored
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_timeout_holds_the_key_then_the_request_completes(warehouse: WarehouseHandle) -> None:
    """A client that gave up on a hanging request meets 409, then the replay of its shipment."""
    warehouse.set_faults(timeout_rate=1.0, timeout_hang_ms=1500)
    body = shipment_body(new_order_id())
    with pytest.raises(requests.Timeout):
        post_shipment(warehouse, body, key_for(body), timeout=0.3)
    warehouse.clear_faults()

    assert_problem(
        post_shipment(warehouse, body, key_for(body)), 409, "/problems/request-in-flight"
    )
    deadline = time.monotonic() + 10
    while (retry := post_shipment(warehouse, body, key_for(body))).status_code == 409:
        assert time.monotonic() < deadline, "the hanging request never completed"
        time.sleep(0.1)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert len(warehouse.shipments(body["order_id"])) == 1


def test_same_seed_replays_the_same_faults(warehouse: WarehouseHandle) -> None:
    """Setting the same seed again gives the same answers to the same requests."""

    def statuses() -> list[int]:
        warehouse.set_faults(error_rate=0.4, throttle_rate=0.3, seed=11)
        return [
            post_shipment(warehouse, shipment_body(o := new_order_id()), f"{o}:1").status_code
            for _ in range(12)
        ]

    first = statuses()
    assert len(set(first)) > 1  # a mix of faults and successes, not a trivial sequence
    assert statuses() == first
