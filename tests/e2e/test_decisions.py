"""A refused line asks for a decision in the Airflow UI, on the real stack, in a real browser.

The warehouse refuses a line's SKU; the line's ``decide_line`` task waits in
``awaiting_input`` and shows under *Required actions*, named by line id and SKU. The
operator answers in the form (fix or cancel, with a reason) or over REST; the order then
finishes by itself. While the decision waits, the test measures what it holds: warehouse
pool slots and running task instances (recorded as test properties, and in
docs/operator-ui.md). Screenshots of the list and the form go to docs/img/ with
``SHIPPING_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from shipping.contract import DAG_ID, DECIDE_TASK, WAREHOUSE_POOL
from shipping.ops.airflow_api import TriggerStatus
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.support import wait_for_required_action
from tests.e2e.ui import AirflowUI, wait_for_run_state

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300
FIX, CANCEL = "Fix and ship", "Cancel line"


def refused_order(stack: LiveStack, prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Post a 3-line order whose line 2 the warehouse refuses; wait until its decision asks.

    Returns:
        The order, and the open required action (the HITL detail) of line 2.
    """
    doc = sample_order(f"{prefix}-{uuid.uuid4().hex[:6].upper()}", 3)
    doc["items"][1]["sku"] = "NOPE-TEE"
    stack.admin.set_faults(reject_skus=["NOPE-*"])
    run_id = run_id_for(doc["order_id"])
    assert stack.api.trigger(DAG_ID, run_id, doc).status is TriggerStatus.ACCEPTED
    return doc, wait_for_required_action(stack, run_id, RUN_TIMEOUT_S)


def line_shipments(stack: LiveStack, doc: dict[str, Any], line_id: str) -> list[dict[str, Any]]:
    """The warehouse's live shipments of one line."""
    return [
        s
        for s in stack.warehouse.list_shipments(doc["order_id"])
        if s["line_id"] == line_id and s["status"] != "cancelled"
    ]


def test_a_refused_line_waits_for_a_decision_holding_no_slot(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """Named by line id and SKU, pre-filled; the siblings ship; while it waits no pool slot
    and no running task instance is held; `shipping watch` names it first."""
    doc, detail = refused_order(stack, "HW")
    order_id = doc["order_id"]
    assert detail["subject"] == f"Decide line 2 · NOPE-TEE of order {order_id}"
    assert detail["options"] == [FIX, CANCEL]
    assert detail["task_instance"]["map_index"] == 1
    params = detail["params"]
    assert (params["sku"]["value"], params["quantity"]["value"]) == (
        "NOPE-TEE",
        doc["items"][1]["quantity"],
    )
    assert params["reason"]["value"] is None  # required, never pre-filled

    pool = stack.api._json("GET", f"/pools/{WAREHOUSE_POOL}")
    busy = stack.api._json(
        "GET",
        "/dags/~/dagRuns/~/taskInstances",
        params=[("state", "running"), ("state", "queued"), ("state", "scheduled")],
    )
    record_property("waiting_decision_pool_occupied_slots", pool["occupied_slots"])
    record_property("waiting_decision_pool_open_slots", pool["open_slots"])
    record_property("waiting_decision_running_or_queued_tis", busy["total_entries"])
    assert (pool["occupied_slots"], pool["open_slots"]) == (0, pool["slots"])
    assert busy["total_entries"] == 0
    assert [line["state"] for line in stack.status(order_id)["lines"]] == [
        "SHIPPED",
        "FAILED",
        "SHIPPED",
    ]

    watched = stack.shipping("watch", order_id, "--timeout", "60")
    assert watched.returncode == 3, watched.stdout + watched.stderr
    out = watched.stdout
    action = f'answer the required action "Decide line 2 · NOPE-TEE": {stack.state.airflow_url}'
    assert action in out
    assert out.index(action) < out.index(f"shipping fix {order_id} --line 2")
    # Answered over REST so the order ends within the test.
    stack.api.answer_hitl(
        DAG_ID,
        run_id_for(order_id),
        DECIDE_TASK,
        1,
        chosen_options=[CANCEL],
        params_input={"sku": "NOPE-TEE", "quantity": 1, "reason": "end of test"},
    )
    wait_for_run_state(stack.api, DAG_ID, run_id_for(order_id), "success", timeout=RUN_TIMEOUT_S)


def test_operator_fixes_a_refused_line_in_the_form_and_the_order_ships(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """The operator finds the required action, fixes SKU and quantity with a reason; the
    order is SHIPPED by itself, with one shipment carrying the new content, by admin."""
    doc, _ = refused_order(stack, "HF")
    order_id = doc["order_id"]
    subject = f"Decide line 2 · NOPE-TEE of order {order_id}"
    ui.page.goto(f"{ui.base_url}/required_actions?response_received=false")
    ui.page.get_by_role("link", name=subject, exact=True).wait_for()
    ui.screenshot("ui-required-actions.png")
    ui.open_required_action(subject)
    assert ui.decision_field("SKU (for a fix)").input_value() == "NOPE-TEE"  # pre-filled
    ui.fill_decision("SKU (for a fix)", "MUG-BLUE")
    ui.fill_decision("Quantity (for a fix)", 4)
    ui.fill_decision("Reason (required)", "SKU renamed by the shop")
    ui.screenshot("ui-decide-line-form.png")
    ui.answer(FIX)

    wait_for_run_state(stack.api, DAG_ID, run_id_for(order_id), "success", timeout=RUN_TIMEOUT_S)
    status = stack.status(order_id)
    assert status["state"] == "SHIPPED"
    line = status["lines"][1]
    assert (line["sku"], line["quantity"], line["state"]) == ("MUG-BLUE", 4, "SHIPPED")
    assert line["idempotency_key"] == f"{order_id}:2#1"
    [shipment] = line_shipments(stack, doc, "2")
    assert (shipment["sku"], shipment["quantity"]) == ("MUG-BLUE", 4)
    assert shipment["shipment_id"] == line["shipment_id"]
    [amendment] = status["amendments"]
    assert (amendment["action"], amendment["by"], amendment["reason"]) == (
        "FIX",
        "admin",  # the Airflow user who answered, not the machine's login
        "SKU renamed by the shop",
    )


def test_operator_cancels_a_refused_line_in_the_form_and_the_order_ships_without_it(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """A cancel with a reason: the line is CANCELLED, nothing ships for it, the order ends."""
    doc, _ = refused_order(stack, "HC")
    order_id = doc["order_id"]
    ui.open_required_action(f"Decide line 2 · NOPE-TEE of order {order_id}")
    ui.fill_decision("Reason (required)", "discontinued")
    ui.answer(CANCEL)

    wait_for_run_state(stack.api, DAG_ID, run_id_for(order_id), "success", timeout=RUN_TIMEOUT_S)
    status = stack.status(order_id)
    assert status["state"] == "SHIPPED"
    assert [line["state"] for line in status["lines"]] == ["SHIPPED", "CANCELLED", "SHIPPED"]
    assert line_shipments(stack, doc, "2") == []
    [amendment] = status["amendments"]
    assert (amendment["action"], amendment["by"], amendment["reason"]) == (
        "CANCEL",
        "admin",
        "discontinued",
    )


def test_an_answer_given_twice_is_refused_and_changes_nothing(stack: LiveStack) -> None:
    """The second PATCH is a 409; the ledger and the warehouse stay as the first left them."""
    doc, _ = refused_order(stack, "HT")
    order_id, run_id = doc["order_id"], run_id_for(doc["order_id"])
    first = stack.api.answer_hitl(
        DAG_ID,
        run_id,
        DECIDE_TASK,
        1,
        chosen_options=[FIX],
        params_input={"sku": "MUG-RED", "quantity": 1, "reason": "first answer"},
    )
    assert first.status_code == 200, first.text
    wait_for_run_state(stack.api, DAG_ID, run_id, "success", timeout=RUN_TIMEOUT_S)
    before = (stack.status(order_id), stack.warehouse.list_shipments(order_id))

    second = stack.api.answer_hitl(
        DAG_ID,
        run_id,
        DECIDE_TASK,
        1,
        chosen_options=[CANCEL],
        params_input={"sku": "MUG-RED", "quantity": 1, "reason": "second answer"},
    )
    assert second.status_code == 409, second.text
    assert (stack.status(order_id), stack.warehouse.list_shipments(order_id)) == before
    assert stack.api.get_run(DAG_ID, run_id)["state"] == "success"
    assert [line["state"] for line in before[0]["lines"]] == ["SHIPPED"] * 3
