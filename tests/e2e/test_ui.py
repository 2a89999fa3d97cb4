"""The operator's path through Airflow's UI, in a real browser, on the real stack.

What the README's runbook tells an operator to do, done by Chromium: sign in, open the
order's run, find the failed line by its name, clear it with its downstream (the reducer),
and see the order finish. The screenshots the README shows are taken here, at each step.
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
from tests.e2e.ui import CHROMIUM_ENV, AirflowUI, ChromiumMissing, find_chromium, wait_for_run_state

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300


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
    wait_for_run_state(stack.api, DAG_ID, run_id, "failed", timeout=RUN_TIMEOUT_S)
    stack.admin.reset_faults()  # the cause is fixed: the operator may retry

    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state(name, "Failed")
    ui.screenshot("ui-mapped-lines.png")

    ui.open_instance("ship_item", name)
    cleared = ui.clear_with_downstream(screenshot="ui-clear-line.png")
    assert cleared == {("ship_item", 2), ("finalize_order", -1)}  # the line and the reducer

    wait_for_run_state(stack.api, DAG_ID, run_id, "success", timeout=RUN_TIMEOUT_S)
    ui.open_run(DAG_ID, run_id)
    ui.open_mapped(DAG_ID, run_id, "ship_item")
    ui.expect_instance_state(name, "Success")
    ui.screenshot("ui-after-retry.png")

    tries = {
        (ti["task_id"], ti["map_index"]): ti["try_number"]
        for ti in stack.api.task_instances(DAG_ID, run_id)
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


def test_no_chromium_is_an_error_that_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a Chromium, the browser tests fail (never skip), saying what to install."""
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ChromiumMissing, match="apt-get install chromium"):
        find_chromium()
