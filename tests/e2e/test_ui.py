"""The operator's path through Airflow's UI, in a real browser, on the real stack.

What the operator runbook (docs/operator-runbook.md) tells an operator to do, done by Chromium: sign in, open the
order's run, find the failed line by its name, clear it with its downstream (the reducer),
and see the order finish; for a line the warehouse refuses, first record a fix with the
``amend_order_line`` Dag's trigger form. The screenshots the runbook shows are taken here,
at each step.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from shipping.contract import DAG_ID
from shipping.ops.airflow_api import TriggerStatus
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.ui import (
    CHROMIUM_ENV,
    AirflowUI,
    ChromiumMissing,
    find_chromium,
    wait_for_decision,
    wait_for_run_state,
)

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300
AMEND_DAG_ID = "amend_order_line"


def test_operator_retries_a_failed_line_in_the_ui_and_the_order_ships(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """A refused line, cleared in the UI with Downstream, re-runs alone and the order ships."""
    doc = sample_order(f"UI-{uuid.uuid4().hex[:6].upper()}", 4)
    run_id = run_id_for(doc["order_id"])
    refused = doc["items"][2]  # line 3: the warehouse refuses its SKU for now
    name = f"line {refused['line_id']} · {refused['sku']}"
    stack.admin.set_faults(reject_skus=[refused["sku"]])
    assert stack.api.trigger(DAG_ID, run_id, doc).status is TriggerStatus.ACCEPTED
    wait_for_decision(stack.api, DAG_ID, run_id, 2, timeout=RUN_TIMEOUT_S)
    stack.admin.reset_faults()  # the cause is fixed: the operator may retry

    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state(name, "Failed")
    ui.screenshot("ui-mapped-lines.png")

    ui.open_instance("ship_item", name)
    cleared = ui.clear_with_downstream(screenshot="ui-clear-line.png")
    # The line, its decision still waiting, and the reducer.
    assert cleared == {("ship_item", 2), ("decide_line", 2), ("finalize_order", -1)}

    wait_for_run_state(stack.api, DAG_ID, run_id, "success", timeout=RUN_TIMEOUT_S)
    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state(name, "Success")
    ui.screenshot("ui-after-retry.png")

    tries = {
        (ti["task_id"], ti["map_index"]): ti["try_number"]
        for ti in stack.api.task_instances(DAG_ID, run_id)
        if ti["task_id"] != "decide_line"  # skipped once its line shipped
    }
    assert tries == {
        ("register_order", -1): 1,
        ("ship_item", 0): 1,
        ("ship_item", 1): 1,
        ("ship_item", 2): 2,
        ("ship_item", 3): 1,
        ("finalize_order", -1): 1,
    }
    shipments = Counter(s["line_id"] for s in stack.warehouse.list_shipments(doc["order_id"]))
    assert shipments == Counter({"1": 1, "2": 1, "3": 1, "4": 1})
    assert stack.status(doc["order_id"])["state"] == "SHIPPED"


def test_operator_fixes_a_refused_sku_with_the_amend_form_and_the_order_ships(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """A refused SKU, corrected in amend_order_line's trigger form, then the line cleared in
    the UI: the order ships once per line, the fixed line under its new SKU."""
    doc = sample_order(f"UI-{uuid.uuid4().hex[:6].upper()}", 3)
    order_id, run_id = doc["order_id"], run_id_for(doc["order_id"])
    refused = doc["items"][1]  # line 2: a SKU the warehouse does not ship
    refused["sku"] = "NOPE-UI"
    stack.admin.set_faults(reject_skus=["NOPE-*"])  # and keeps refusing: only the fix helps
    assert stack.api.trigger(DAG_ID, run_id, doc).status is TriggerStatus.ACCEPTED
    wait_for_decision(stack.api, DAG_ID, run_id, 1, timeout=RUN_TIMEOUT_S)
    assert stack.status(order_id)["lines"][1]["state"] == "FAILED"

    form = ui.open_trigger_form(AMEND_DAG_ID)
    ui.fill_param(form, "Order id", order_id)
    ui.fill_param(form, "Line id", "2")
    ui.choose_param(form, "Fix or cancel", "fix")
    ui.fill_param(form, "New SKU", "TEE-L")
    ui.fill_param(form, "Why", "renamed in the catalogue")
    ui.screenshot("ui-amend-form.png", ui.run_parameters(form))
    amend_run_id = ui.submit_trigger(form, AMEND_DAG_ID)
    amend_run = wait_for_run_state(
        stack.api, AMEND_DAG_ID, amend_run_id, "success", timeout=RUN_TIMEOUT_S
    )
    assert amend_run["conf"] == {  # what the form sent: the empty quantity is null
        "order_id": order_id,
        "line_id": "2",
        "action": "fix",
        "sku": "TEE-L",
        "quantity": None,
        "reason": "renamed in the catalogue",
    }

    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state("line 2 · NOPE-UI", "Failed")
    ui.open_instance("ship_item", "line 2 · NOPE-UI")
    cleared = ui.clear_with_downstream()
    assert cleared == {("ship_item", 1), ("decide_line", 1), ("finalize_order", -1)}
    wait_for_run_state(stack.api, DAG_ID, run_id, "success", timeout=RUN_TIMEOUT_S)
    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state("line 2 · TEE-L", "Success")  # its name follows the fix

    status = stack.status(order_id)
    assert status["state"] == "SHIPPED"
    assert [(line["sku"], line["state"]) for line in status["lines"]] == [
        ("MUG-RED", "SHIPPED"),
        ("TEE-L", "SHIPPED"),
        ("CAP-BLK", "SHIPPED"),
    ]
    [amendment] = status["amendments"]
    assert (amendment["action"], amendment["by"], amendment["reason"]) == (
        "FIX",
        "admin",  # the UI's login
        "renamed in the catalogue",
    )
    assert (amendment["old"]["sku"], amendment["new"]["sku"]) == ("NOPE-UI", "TEE-L")
    shipments = stack.warehouse.list_shipments(order_id)
    assert Counter(s["line_id"] for s in shipments) == Counter({"1": 1, "2": 1, "3": 1})
    [line2] = [s for s in shipments if s["line_id"] == "2"]
    assert (line2["sku"], line2["quantity"], line2["idempotency_key"]) == (
        "TEE-L",
        refused["quantity"],
        f"{order_id}:2#1",  # the fix moved the line to its next key
    )


def test_no_chromium_is_an_error_that_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a Chromium, the browser tests fail (never skip), saying what to install."""
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ChromiumMissing, match="apt-get install chromium"):
        find_chromium()
