"""Helpers of the warehouse service tests: request bodies, calls and problem checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from tests.warehouse_mock import legacy_storage_b80d08c as legacy
from warehouse_mock.problems import PROBLEM_MEDIA_TYPE
from warehouse_mock.service import request_fingerprint
from warehouse_mock.testing import WarehouseHandle

HTTP_TIMEOUT = 10.0


def new_order_id() -> str:
    """An order id no other test uses (the session's server is shared)."""
    return f"ORD-{uuid.uuid4().hex[:16]}"


def shipment_body(order_id: str, line_id: str = "1", **changes: Any) -> dict[str, Any]:
    """A valid ``POST /v1/shipments`` body, with ``changes`` applied."""
    body: dict[str, Any] = {
        "order_id": order_id,
        "line_id": line_id,
        "sku": "MUG-RED",
        "quantity": 2,
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
        },
    }
    body.update(changes)
    return body


def key_for(body: dict[str, Any]) -> str:
    """The key the shipping client uses for a line: ``<order_id>:<line_id>``."""
    return f"{body['order_id']}:{body['line_id']}"


def post_shipment(
    warehouse: WarehouseHandle,
    body: dict[str, Any] | bytes,
    key: str,
    *,
    token: str | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> requests.Response:
    """POST a shipment with a client token (the first one unless ``token`` is given)."""
    return requests.post(
        f"{warehouse.base_url}/v1/shipments",
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={
            "Authorization": f"Bearer {token or warehouse.api_token}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
        timeout=timeout,
    )


def post_void(
    warehouse: WarehouseHandle,
    key: str,
    reason: str = "operator cancel",
    *,
    token: str | None = None,
    body: dict[str, Any] | bytes | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> requests.Response:
    """POST /v1/voids for ``key`` with a client token (``body`` replaces the usual one)."""
    document = {"idempotency_key": key, "reason": reason} if body is None else body
    return requests.post(
        f"{warehouse.base_url}/v1/voids",
        data=document if isinstance(document, bytes) else json.dumps(document),
        headers={
            "Authorization": f"Bearer {token or warehouse.api_token}",
            "Content-Type": "application/json",
        },
        timeout=timeout,
    )


def assert_problem(response: requests.Response, status: int, problem_type: str) -> dict[str, Any]:
    """Check that ``response`` is the problem+json of ``status`` and ``problem_type``."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM_MEDIA_TYPE)
    problem: dict[str, Any] = response.json()
    assert problem["type"] == problem_type
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


def make_b80d08c_database(
    database_url: str, scope: str, key: str = "ORD-1:1", body: dict[str, Any] | None = None
) -> str:
    """Make a database as b80d08c did, with one shipment of ``body`` under ``key`` in
    ``scope``, its 201 stored; returns the shipment id."""
    body = body or shipment_body("ORD-1")
    old = legacy.Storage(database_url)
    old.create_schema()
    now = datetime.now(UTC)
    claim = old.claim(
        scope=scope,
        idempotency_key=key,
        fingerprint=request_fingerprint(body),
        lease_seconds=30,
        now=now,
    )
    assert isinstance(claim, legacy.Claim)
    shipment_id = f"shp_{uuid.uuid4().hex}"
    fields = {k: v for k, v in body.items() if k != "ship_to"}
    old.complete(
        claim=claim,
        shipment=legacy.NewShipment(
            shipment_id=shipment_id,
            ship_to=body["ship_to"],
            status="created",
            created_at=now,
            **fields,
        ),
        response_status=201,
        response_body=json.dumps({"shipment_id": shipment_id, **body}),
        now=now,
    )
    old.dispose()
    return shipment_id


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WarehouseProcess:
    """``python -m warehouse_mock`` in a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "warehouse_mock", "--port", str(self.port)],
                cwd=workdir,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` answers 200; fail with the log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"warehouse exited early:\n{self.log()}")
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"warehouse not ready after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL if it lingers)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
