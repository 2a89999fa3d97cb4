"""Tests that simultaneous identical requests create exactly one shipment.

The injected latency holds the first request's claim long enough for all the others to
arrive while it is in flight; every answer must then be a 409 or a replay of the one
shipment. Once with one server in a thread, once with two server processes sharing a
PostgreSQL database (the claim lives in the database, not in a process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.warehouse_mock.support import (
    WarehouseProcess,
    key_for,
    new_order_id,
    post_shipment,
    shipment_body,
)
from warehouse_mock.testing import WarehouseHandle

CONCURRENT_REQUESTS = 24
LATENCY_MS = 400
API_TOKEN = "client-token-concurrency"
ADMIN_TOKEN = "admin-token-concurrency"


def fire_together(targets: list[WarehouseHandle], body: dict[str, Any]) -> list[requests.Response]:
    """POST ``body`` under one key CONCURRENT_REQUESTS times at once, round-robin on targets."""
    barrier = threading.Barrier(CONCURRENT_REQUESTS)

    def one(index: int) -> requests.Response:
        target = targets[index % len(targets)]
        barrier.wait()
        return post_shipment(target, body, key_for(body), timeout=30)

    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        return list(pool.map(one, range(CONCURRENT_REQUESTS)))


def assert_exactly_one_shipment(
    responses: list[requests.Response], shipments: list[dict[str, Any]]
) -> None:
    """One fresh 201; every other answer a 409 or a replay of that same shipment."""
    assert len(shipments) == 1
    shipment_id = shipments[0]["shipment_id"]
    fresh = [
        r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
    ]
    assert len(fresh) == 1
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 201:
            assert response.json()["shipment_id"] == shipment_id
        else:
            assert response.json()["type"] == "/problems/request-in-flight"


def test_simultaneous_identical_requests_create_one_shipment(warehouse: WarehouseHandle) -> None:
    """Twenty-four identical requests at once on one server give exactly one shipment."""
    warehouse.set_faults(latency_ms=LATENCY_MS)
    body = shipment_body(new_order_id())
    responses = fire_together([warehouse], body)
    assert_exactly_one_shipment(responses, warehouse.shipments(body["order_id"]))
    assert any(r.status_code == 409 for r in responses)  # they did overlap


@pytest.fixture
def two_processes(postgres_url: str, tmp_path: Path) -> Iterator[list[WarehouseHandle]]:
    """Two ``python -m warehouse_mock`` processes on one PostgreSQL database."""
    env = {
        "WAREHOUSE_DATABASE_URL": postgres_url,
        "WAREHOUSE_API_TOKEN": API_TOKEN,
        "WAREHOUSE_ADMIN_TOKEN": ADMIN_TOKEN,
        "WAREHOUSE_FAULTS": f'{{"latency_ms": {LATENCY_MS}}}',
    }
    processes = [WarehouseProcess(env, tmp_path, f"warehouse-{i}") for i in range(2)]
    try:
        for process in processes:
            process.wait_ready()
        yield [WarehouseHandle(p.base_url, API_TOKEN, ADMIN_TOKEN, postgres_url) for p in processes]
    finally:
        for process in processes:
            process.stop()


@pytest.mark.postgres
def test_two_server_processes_on_one_database_create_one_shipment(
    two_processes: list[WarehouseHandle],
) -> None:
    """Identical requests spread over two processes sharing PostgreSQL give one shipment."""
    body = shipment_body(new_order_id())
    responses = fire_together(two_processes, body)
    first, second = (w.shipments(body["order_id"]) for w in two_processes)
    assert first == second
    assert_exactly_one_shipment(responses, first)
    assert any(r.status_code == 409 for r in responses)  # they did overlap
