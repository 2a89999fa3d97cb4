"""End to end on the real stack: an order posted over REST ships every line exactly once.

Only public interfaces: Airflow's REST API, the warehouse's HTTP API, the ``shipping``
command. Each test uses its own order ids; the warehouse's faults are reset after each.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shipping.contract import DAG_ID
from shipping.ops.airflow_api import TriggerStatus
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300


_SHIP_TO = sample_order("X", 1)["ship_to"]


def new_order(lines: int, **overrides: Any) -> dict[str, Any]:
    doc = sample_order(f"E2E-{uuid.uuid4().hex[:10]}", lines)
    doc.update(overrides)
    return doc


def post(stack: LiveStack, doc: dict[str, Any], run_id: str | None = None) -> Any:
    return stack.api.trigger(DAG_ID, run_id or run_id_for(doc["order_id"]), doc)


def run_to_end(stack: LiveStack, doc: dict[str, Any], run_id: str | None = None) -> str:
    run = stack.api.wait_for_run(
        DAG_ID, run_id or run_id_for(doc["order_id"]), timeout=RUN_TIMEOUT_S
    )
    return str(run["state"])


def shipments_per_line(stack: LiveStack, order_id: str) -> Counter[str]:
    return Counter(s["line_id"] for s in stack.warehouse.list_shipments(order_id))


def mapped(stack: LiveStack, order_id: str) -> list[dict[str, Any]]:
    return stack.api.mapped_instances(DAG_ID, run_id_for(order_id), "ship_item")


def test_posted_order_ships_every_line_once_and_is_shipped(stack: LiveStack) -> None:
    """REST trigger -> run success, order SHIPPED, one warehouse shipment per line."""
    doc = new_order(5)
    assert post(stack, doc).status is TriggerStatus.ACCEPTED
    assert run_to_end(stack, doc) == "success"
    status = stack.status(doc["order_id"])
    assert status["state"] == "SHIPPED"
    assert [line["state"] for line in status["lines"]] == ["SHIPPED"] * 5
    assert shipments_per_line(stack, doc["order_id"]) == Counter({str(i): 1 for i in range(1, 6)})
    shipment_ids = {
        s["line_id"]: s["shipment_id"] for s in stack.warehouse.list_shipments(doc["order_id"])
    }
    assert {line["line_id"]: line["shipment_id"] for line in status["lines"]} == shipment_ids


def test_submit_posts_a_new_order_and_status_shows_it_shipped(
    stack: LiveStack, tmp_path: Path
) -> None:
    """`shipping submit` accepts a new order; `shipping status --json` shows every line."""
    doc = new_order(2)
    path = tmp_path / "order.json"
    path.write_text(json.dumps(doc))
    result = stack.shipping("submit", str(path))
    assert result.returncode == 0, result.stderr
    assert f"order {doc['order_id']} accepted" in result.stdout
    assert run_to_end(stack, doc) == "success"
    status = stack.status(doc["order_id"])
    assert set(status) == {
        "order_id",
        "state",
        "reason",
        "run_id",
        "other_runs",
        "cancelled_lines",
        "lines",
        "amendments",
    }
    assert (status["reason"], status["run_id"], status["other_runs"]) == (
        None,
        run_id_for(doc["order_id"]),
        [],
    )
    assert status["state"] == "SHIPPED"
    assert [set(line) for line in status["lines"]] == [
        {
            "line_id",
            "sku",
            "quantity",
            "state",
            "attempts",
            "shipment_id",
            "last_error",
            "error_class",
            "error_final",
            "revision",
            "idempotency_key",
            "void_pending",
        }
    ] * 2


def test_each_mapped_instance_is_named_by_line_and_sku(stack: LiveStack) -> None:
    """Operators see `line <id> · <sku>` for each mapped instance in the UI and API."""
    doc = new_order(3)
    post(stack, doc)
    assert run_to_end(stack, doc) == "success"
    names = sorted(ti["rendered_map_index"] for ti in mapped(stack, doc["order_id"]))
    assert names == sorted(f"line {i['line_id']} · {i['sku']}" for i in doc["items"])


def test_an_integral_float_quantity_ships_as_that_integer(stack: LiveStack) -> None:
    """quantity 2.0 passes the door (JSON Schema calls it an integer) and ships as 2."""
    doc = new_order(1)
    doc["items"][0]["quantity"] = 2.0
    assert post(stack, doc).status is TriggerStatus.ACCEPTED
    assert run_to_end(stack, doc) == "success"
    [shipment] = stack.warehouse.list_shipments(doc["order_id"])
    assert shipment["quantity"] == 2


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"items": []}, "items"),
        ({"ship_to": {"name": "A"}}, "ship_to"),
        ({"order_id": "has spaces"}, "order_id"),
        # Holes of Python's "$" and of what a database or a run id cannot hold:
        ({"order_id": "E2E..x"}, "order_id"),
        ({"ship_to": {**_SHIP_TO, "country": "DE\n"}}, "ship_to"),
        ({"ship_to": {**_SHIP_TO, "name": "Ada\u0000"}}, "ship_to"),
        ({"items": [{"line_id": "1\n", "sku": "MUG-RED", "quantity": 1}]}, "items"),
        ({"items": [{"line_id": "1", "sku": "MUG-RED", "quantity": 0}]}, "items"),
    ],
)
def test_bad_order_is_refused_with_400_and_creates_no_run(
    stack: LiveStack, change: dict[str, Any], param: str
) -> None:
    """A schema violation is refused by the REST call itself, naming the param."""
    doc = new_order(2, **change)
    run_id = f"order-bad-{uuid.uuid4().hex[:8]}"
    outcome = post(stack, doc, run_id)
    assert outcome.status is TriggerStatus.REFUSED
    assert outcome.http_status == 400
    assert f"Invalid input for param {param}" in (outcome.reason or "")
    assert stack.api.get_run(DAG_ID, run_id) is None


def test_missing_field_is_refused_with_400(stack: LiveStack) -> None:
    """An order without items is refused by Airflow: every order field is required."""
    doc = new_order(2)
    del doc["items"]
    outcome = post(stack, doc)
    assert outcome.status is TriggerStatus.REFUSED
    assert outcome.http_status == 400
    assert stack.api.get_run(DAG_ID, run_id_for(doc["order_id"])) is None


def test_duplicate_line_ids_reject_the_order_and_ship_nothing(stack: LiveStack) -> None:
    """What the schema cannot say fails register_order: REJECTED with the reason."""
    doc = new_order(2)
    doc["items"][1]["line_id"] = doc["items"][0]["line_id"]
    assert post(stack, doc).status is TriggerStatus.ACCEPTED
    assert run_to_end(stack, doc) == "failed"
    result = stack.shipping("status", doc["order_id"])
    assert result.returncode == 0
    assert "REJECTED" in result.stdout
    assert "duplicate line_id '1'" in result.stdout
    assert stack.warehouse.list_shipments(doc["order_id"]) == []
    register = [
        ti
        for ti in stack.api.task_instances(DAG_ID, run_id_for(doc["order_id"]))
        if ti["task_id"] == "register_order"
    ]
    assert register[0]["try_number"] == 1  # final: not retried


def test_same_order_twice_is_409_and_ships_nothing_new(stack: LiveStack, tmp_path: Path) -> None:
    """A repeated run id gets 409; `shipping submit` calls it already accepted."""
    doc = new_order(2)
    post(stack, doc)
    assert run_to_end(stack, doc) == "success"
    again = post(stack, doc)
    assert again.status is TriggerStatus.EXISTS
    assert again.http_status == 409
    path = tmp_path / "order.json"
    path.write_text(json.dumps(doc))
    result = stack.shipping("submit", str(path))
    assert result.returncode == 0
    assert "already accepted" in result.stdout
    assert shipments_per_line(stack, doc["order_id"]) == Counter({"1": 1, "2": 1})


def test_same_id_with_other_content_is_refused_by_submit(stack: LiveStack, tmp_path: Path) -> None:
    """`shipping submit` refuses a different order under an accepted id, clearly."""
    doc = new_order(1)
    post(stack, doc)
    changed = dict(doc, items=[{"line_id": "1", "sku": "MUG-RED", "quantity": 9}])
    path = tmp_path / "order.json"
    path.write_text(json.dumps(changed))
    result = stack.shipping("submit", str(path))
    assert result.returncode == 2
    assert "different content" in result.stderr


def test_same_order_under_another_run_id_does_nothing_and_names_the_owner(
    stack: LiveStack,
) -> None:
    """One run per order: a second run fans out to nothing; status names both runs."""
    doc = new_order(3)
    post(stack, doc)
    assert run_to_end(stack, doc) == "success"
    before = stack.warehouse.list_shipments(doc["order_id"])
    other_run = f"{run_id_for(doc['order_id'])}-again"
    assert post(stack, doc, other_run).status is TriggerStatus.ACCEPTED
    assert run_to_end(stack, doc, other_run) == "success"
    assert stack.warehouse.list_shipments(doc["order_id"]) == before
    ship_items = [
        ti for ti in stack.api.task_instances(DAG_ID, other_run) if ti["task_id"] == "ship_item"
    ]
    assert {ti["state"] for ti in ship_items} <= {"skipped"}
    status = stack.status(doc["order_id"])
    assert status["run_id"] == run_id_for(doc["order_id"])
    assert status["other_runs"] == [
        {
            "run_id": other_run,
            "role": "DUPLICATE",
            "reason": f"the order belongs to run {run_id_for(doc['order_id'])}",
        }
    ]


def test_other_content_under_another_run_id_is_refused_without_retries(
    stack: LiveStack,
) -> None:
    """Another order under an accepted order_id fails its run at once; status says why."""
    doc = new_order(1)
    post(stack, doc)
    assert run_to_end(stack, doc) == "success"
    other_run = f"{run_id_for(doc['order_id'])}-changed"
    changed = dict(doc, customer_id="C-other")
    assert post(stack, changed, other_run).status is TriggerStatus.ACCEPTED
    assert run_to_end(stack, changed, other_run) == "failed"
    [register] = [
        ti
        for ti in stack.api.task_instances(DAG_ID, other_run)
        if ti["task_id"] == "register_order"
    ]
    assert register["try_number"] == 1
    [refused] = stack.status(doc["order_id"])["other_runs"]
    assert (refused["run_id"], refused["role"]) == (other_run, "REFUSED")
    assert "different content" in refused["reason"]
    assert len(stack.warehouse.list_shipments(doc["order_id"])) == 1


def test_refused_line_fails_alone_and_a_cleared_retry_finalizes(stack: LiveStack) -> None:
    """A refused line fails at once and waits for a decision while its siblings ship; after
    the fault is lifted, clearing it (and its decision, as the UI's clear does) ships the
    order."""
    doc = new_order(3)
    doc["items"][1]["sku"] = "BLOCKED-1"
    stack.admin.set_faults(reject_skus=["BLOCKED-*"])
    post(stack, doc)
    run_id = run_id_for(doc["order_id"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not [
        ti
        for ti in stack.api.task_instances(DAG_ID, run_id)
        if ti["task_id"] == "decide_line" and ti["state"] == "awaiting_input"
    ]:
        assert stack.api.get_run(DAG_ID, run_id)["state"] in ("queued", "running")
        assert time.monotonic() < deadline
        time.sleep(1.0)
    instances = {ti["map_index"]: ti for ti in mapped(stack, doc["order_id"])}
    assert instances[1]["state"] == "failed"
    assert instances[1]["try_number"] == 1  # a refusal is final: no Airflow retry
    assert {instances[0]["state"], instances[2]["state"]} == {"success"}
    assert stack.status(doc["order_id"])["state"] == "SHIPPING"
    assert shipments_per_line(stack, doc["order_id"]) == Counter({"1": 1, "3": 1})

    stack.admin.reset_faults()
    cleared = stack.api.clear_mapped(DAG_ID, run_id, "ship_item", [1])
    assert {(ti["task_id"], ti["map_index"]) for ti in cleared} == {("ship_item", 1)}
    waiting = stack.api.clear_waiting(DAG_ID, run_id, "decide_line", [1])
    assert {(ti["task_id"], ti["map_index"]) for ti in waiting} == {("decide_line", 1)}
    assert run_to_end(stack, doc) == "success"
    after = {ti["map_index"]: ti for ti in mapped(stack, doc["order_id"])}
    assert after[0]["try_number"] == 1  # siblings did not run again
    assert after[2]["try_number"] == 1
    assert after[1]["try_number"] == 2
    assert stack.status(doc["order_id"])["state"] == "SHIPPED"
    assert shipments_per_line(stack, doc["order_id"]) == Counter({"1": 1, "2": 1, "3": 1})


def test_heavy_faults_still_ship_every_line_exactly_once(stack: LiveStack) -> None:
    """Errors, commit-then-error and throttling: every line ships, exactly once."""
    doc = new_order(20)
    stack.admin.set_faults(
        error_rate=0.2,
        commit_then_error_rate=0.3,
        throttle_rate=0.2,
        retry_after_seconds=1,
        seed=11,
    )
    post(stack, doc)
    assert run_to_end(stack, doc) == "success"
    status = stack.status(doc["order_id"])
    assert status["state"] == "SHIPPED"
    assert shipments_per_line(stack, doc["order_id"]) == Counter({str(i): 1 for i in range(1, 21)})
    assert sum(line["attempts"] for line in status["lines"]) > 20  # faults were met
