"""Tests that simultaneous requests keep exactly once: identical posts, and a post racing a void.

The injected latency holds the first request's claim long enough for all the others to
arrive while it is in flight; every answer must then be a 409 or a replay of the one
shipment. A void fired at every moment of a slow post's life must win: no live shipment
is left under the key. Once with one server in a thread, once with two server processes
sharing a PostgreSQL database (the claim lives in the database, not in a process).
"""

from __future__ import annotations

import threading
import time
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
    post_void,
    shipment_body,
)
from warehouse_mock.testing import WarehouseHandle

CONCURRENT_REQUESTS = 24
LATENCY_MS = 400
# When the void is sent, in ms after the post: before its claim, while it sleeps in
# flight, around its commit (LATENCY_MS) and after it answered.
VOID_OFFSETS_MS = [0, 5, 20, 100, 250, 380, 395, 400, 405, 410, 420, 450, 600]
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


def race_post_and_void(
    post_to: WarehouseHandle, void_to: WarehouseHandle, offset_ms: int
) -> tuple[requests.Response, requests.Response, str]:
    """POST a slow shipment and, ``offset_ms`` later, void its key; both answers and the
    order id (the order's only line is the key's)."""
    body = shipment_body(new_order_id())
    key = key_for(body)
    with ThreadPoolExecutor(max_workers=1) as pool:
        posted = pool.submit(post_shipment, post_to, body, key, timeout=30)
        time.sleep(offset_ms / 1000)
        voided = post_void(void_to, key, f"race at {offset_ms} ms", timeout=30)
        return posted.result(), voided, body["order_id"]


def assert_void_won(
    post: requests.Response, void: requests.Response, shipments: list[dict[str, Any]]
) -> None:
    """No live shipment under the key; the post's 201 only for the shipment the void cancelled."""
    assert void.status_code == 200, void.text
    assert all(s["status"] == "cancelled" for s in shipments), shipments
    assert post.status_code in (201, 410), post.text
    cancelled = void.json()["shipment"]
    if post.status_code == 201:
        assert cancelled is not None
        assert cancelled["shipment_id"] == post.json()["shipment_id"]
        assert shipments == [cancelled]
    else:
        assert post.json()["type"] == "/problems/key-voided"
        assert cancelled is None
        assert shipments == []


@pytest.mark.parametrize("offset_ms", VOID_OFFSETS_MS)
def test_a_void_racing_a_slow_post_leaves_no_live_shipment(
    warehouse: WarehouseHandle, offset_ms: int
) -> None:
    """Invariant: after a slow POST and a void of its key both finish, no shipment under the
    key has status created, and the POST answered 201 only if the void then cancelled that
    very shipment (otherwise it answered 410 key-voided and nothing was created)."""
    warehouse.set_faults(latency_ms=LATENCY_MS)
    post, void, order_id = race_post_and_void(warehouse, warehouse, offset_ms)
    assert_void_won(post, void, warehouse.shipments(order_id))


def test_a_void_during_the_posts_latency_answers_the_post_410(warehouse: WarehouseHandle) -> None:
    """A post still in flight when its key is voided commits nothing and answers 410."""
    warehouse.set_faults(latency_ms=LATENCY_MS)
    post, void, _ = race_post_and_void(warehouse, warehouse, LATENCY_MS // 2)
    assert post.status_code == 410, post.text
    assert void.json()["shipment"] is None


@pytest.mark.postgres
def test_a_void_on_another_process_racing_a_slow_post_leaves_no_live_shipment(
    two_processes: list[WarehouseHandle],
) -> None:
    """Invariant as above, with the post and the void on two processes sharing PostgreSQL:
    no shipment under the key has status created once both finished, and a 201 only for
    the shipment the void cancelled."""
    post_to, void_to = two_processes
    answers = set()
    # One test over every offset: starting two processes per offset would cost a minute.
    for offset_ms in VOID_OFFSETS_MS:
        post, void, order_id = race_post_and_void(post_to, void_to, offset_ms)
        assert_void_won(post, void, post_to.shipments(order_id))
        answers.add(post.status_code)
    assert answers == {201, 410}  # the void landed both before and after the commit
