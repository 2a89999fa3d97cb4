"""The ledger view's web app with a fake Airflow: pages, escaping, JSON and its guards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from shipping import pipeline
from shipping.amend import amend_line
from shipping.ledger import Amendment, Ledger
from shipping.ops.samples import sample_order
from shipping.orderview import RunTasks, TaskState
from shipping.ui.app import Guards, create_app
from shipping.warehouse import WarehouseClient

USER_HEADER = "X-Test-User"


class FakeBackend:
    """The ledger and warehouse of the test; Airflow's runs as given."""

    def __init__(self, ledger: Ledger, client: WarehouseClient) -> None:
        self._ledger, self._client = ledger, client
        self.runs: dict[str, RunTasks] = {}

    def ledger(self) -> Ledger:
        return self._ledger

    @contextmanager
    def warehouse(self) -> Iterator[WarehouseClient]:
        yield self._client

    def run_tasks(self, dag_id: str, run_id: str) -> RunTasks | None:
        return self.runs.get(run_id)

    def failed_runs(self, limit: int) -> list[RunTasks]:
        return [r for r in self.runs.values() if any(t.state == "failed" for t in r.lines.values())]


def authenticated(request: Request) -> str:
    """Airflow's get_user, as a header: 401 without it."""
    user = request.headers.get(USER_HEADER)
    if not user:
        raise HTTPException(401, "Not authenticated")
    return user


def may_read(request: Request) -> None:
    """Airflow's requires_access_dag: the user 'viewer-of-nothing' may read no Dag."""
    if request.headers.get(USER_HEADER) == "viewer-of-nothing":
        raise HTTPException(403, "Forbidden")


@pytest.fixture
def backend(ledger: Ledger, client: WarehouseClient) -> FakeBackend:
    return FakeBackend(ledger, client)


@pytest.fixture
def http(backend: FakeBackend) -> Iterator[TestClient]:
    app = create_app(backend, Guards(authenticated, may_read, may_read))
    with TestClient(app, headers={USER_HEADER: "admin"}) as client:
        yield client


def refused_and_fixed(ledger: Ledger, client: WarehouseClient, backend: FakeBackend) -> str:
    """An order whose line 2 was refused, then fixed with a reason holding markup."""
    doc = sample_order(f"APP-{uuid.uuid4().hex[:8]}", 2)
    run_id = f"order-{doc['order_id']}"
    pipeline.register(ledger, doc, run_id=run_id)
    ledger.record_failed(
        order_id=doc["order_id"],
        line_id="2",
        try_number=1,
        requests=1,
        error="SkuRefused: <img src=x onerror=alert(1)>",
        error_class="SkuRefused",
        error_final=True,
    )
    amend_line(
        ledger,
        client,
        order_id=doc["order_id"],
        line_id="2",
        action=Amendment.FIX,
        actor="ada",
        reason="<script>alert('x')</script> renamed",
        sku="MUG-BLUE",
    )
    backend.runs[run_id] = RunTasks(
        run_id, "failed", {0: TaskState("success", 1), 1: TaskState("failed", 1)}, "success"
    )
    return str(doc["order_id"])


def test_the_run_page_shows_lines_and_amendments_with_ledger_text_escaped(
    http: TestClient, ledger: Ledger, client: WarehouseClient, backend: FakeBackend
) -> None:
    """Who, why, old and new are shown; markup in a reason or an error is text, not HTML."""
    order_id = refused_and_fixed(ledger, client, backend)
    page = http.get(f"/runs/order_intake/order-{order_id}")
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; renamed" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert ">ada<" in html
    assert "MUG-BLUE x" in html
    assert f"shipping retry {order_id}" in html  # fixed: its retry ends it


def test_a_task_instance_page_shows_only_its_line(
    http: TestClient, ledger: Ledger, client: WarehouseClient, backend: FakeBackend
) -> None:
    """ship_item's map index 1 is line 2: one row of lines."""
    order_id = refused_and_fixed(ledger, client, backend)
    html = http.get(f"/runs/order_intake/order-{order_id}/lines/1").text
    assert 'data-line="2"' in html
    assert 'data-line="1"' not in html


def test_a_run_of_another_dag_or_unknown_to_the_ledger_has_no_order(http: TestClient) -> None:
    """The page says there is no order for the run, and why; the JSON is a 404."""
    assert "shows the orders of" in http.get("/runs/reconcile_ledger/scheduled__x").text
    assert "has no order for run" in http.get("/runs/order_intake/order-NOPE").text
    assert http.get("/api/runs/order_intake/order-NOPE").status_code == 404
    assert http.get("/api/orders/NOPE").status_code == 404


def test_the_open_orders_page_and_json_name_the_order_and_its_commands(
    http: TestClient, ledger: Ledger, client: WarehouseClient, backend: FakeBackend
) -> None:
    """The fixed order's failed line makes it open, ended by `shipping retry`."""
    order_id = refused_and_fixed(ledger, client, backend)
    [listed] = http.get("/api/open").json()["orders"]
    assert (listed["order_id"], listed["failed_lines"], listed["needs"]) == (
        order_id,
        ["2"],
        [f"shipping retry {order_id}"],
    )
    html = http.get("/open").text
    assert f'data-order="{order_id}"' in html
    assert f"shipping retry {order_id}" in html


def test_the_order_json_is_the_status_json_with_tasks_and_reconciliation(
    http: TestClient, ledger: Ledger, client: WarehouseClient, backend: FakeBackend
) -> None:
    """The keys of `shipping status --json`, plus each line's task and the reconciliation."""
    order_id = refused_and_fixed(ledger, client, backend)
    doc: dict[str, Any] = http.get(f"/api/orders/{order_id}").json()
    assert {"order_id", "state", "run_id", "lines", "amendments"} <= set(doc)
    assert [(x["line_id"], x["task_state"]) for x in doc["lines"]] == [
        ("1", "success"),
        ("2", "failed"),
    ]
    assert doc["reconciliation"]["clean"] is True
    assert doc["lines"][1]["amendments"][0]["by"] == "ada"


@pytest.mark.parametrize(
    "path",
    ["/open", "/api/open", "/orders/X", "/api/orders/X", "/runs/order_intake/r", "/api/runs/d/r"],
)
def test_every_route_refuses_an_unauthenticated_or_unauthorized_request(
    backend: FakeBackend, path: str
) -> None:
    """No user: 401; a user who may not read the Dag's runs: 403; nothing of the ledger."""
    app = create_app(backend, Guards(authenticated, may_read, may_read))
    with TestClient(app) as anonymous:
        assert anonymous.get(path).status_code == 401
        assert anonymous.get(path, headers={USER_HEADER: "viewer-of-nothing"}).status_code == 403
