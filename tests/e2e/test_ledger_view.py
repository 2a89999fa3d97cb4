"""The ledger view inside Airflow's UI (the shipping_ledger plugin), on the real stack.

Chromium signs in to the session's stack and reads what an operator reads: the *Ledger*
tab of an order's run (each line's shipment id, an amendment with its user and reason,
the reconciliation) and *Browse → Open orders* (a stuck order with the command that ends
it). The plugin's API is asked without credentials too: it must refuse. The screenshots
of docs/ledger-view.md are taken here.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import FrameLocator, expect

from shipping.contract import DAG_ID
from shipping.ops.airflow_api import TriggerStatus
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.support import wait_for_required_action
from tests.e2e.ui import AirflowUI, wait_for_run_state

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300
PREFIX = "/shipping-ledger"


def stuck_order(stack: LiveStack, lines: int, refused: int) -> dict[str, Any]:
    """An order whose line ``refused`` (1-based) the warehouse refuses; its decision waits."""
    doc = sample_order(f"LV-{uuid.uuid4().hex[:8].upper()}", lines)
    doc["items"][refused - 1]["sku"] = f"NOPE-{refused}"
    stack.admin.set_faults(reject_skus=["NOPE-*"])
    run_id = run_id_for(doc["order_id"])
    assert stack.api.trigger(DAG_ID, run_id, doc).status is TriggerStatus.ACCEPTED
    wait_for_required_action(stack, run_id, RUN_TIMEOUT_S)
    return doc


def shipping_as(stack: LiveStack, operator: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``shipping`` command run by the operator ``operator`` (SHIPPING_OPERATOR)."""
    command = Path(sys.executable).parent / "shipping"
    env = {**stack.env, "SHIPPING_OPERATOR": operator}
    return subprocess.run(
        [str(command), *args], env=env, capture_output=True, text=True, check=False
    )


def view_frame(ui: AirflowUI, name: str) -> FrameLocator:
    """The plugin's page inside the UI: the iframe Airflow titles with the view's name."""
    frame = ui.page.frame_locator(f'iframe[title="{name}"]')
    expect(frame.locator("body")).to_be_visible()
    return frame


def test_the_open_orders_page_lists_a_stuck_order_with_the_command_that_ends_it(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """A refused line: Browse → Open orders shows the order, its line and `shipping fix`."""
    doc = stuck_order(stack, 3, refused=2)
    order_id = doc["order_id"]
    ui.page.goto(f"{ui.base_url}/plugin/open-orders")
    frame = view_frame(ui, "Open orders")
    row = frame.locator(f'tr[data-order="{order_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("SHIPPING")
    # Its required action first (the line's decision waits), the command line second.
    expect(row).to_contain_text('answer the required action "Decide line 2 · NOPE-2"')
    expect(row).to_contain_text(f'shipping fix {order_id} --line 2 --sku NEW_SKU --reason "..."')
    expect(row).to_contain_text(f'shipping cancel {order_id} --line 2 --reason "..."')
    ui.screenshot("ledger-view-open-orders.png")
    # The order's own page, one click away inside the view.
    row.get_by_role("link", name=order_id, exact=True).click()
    expect(frame.get_by_test_id("order-state")).to_have_text("SHIPPING")
    expect(frame.get_by_test_id("needs")).to_contain_text(f"shipping fix {order_id} --line 2")


def test_the_runs_ledger_tab_shows_shipment_ids_and_an_amendment_with_its_user_and_reason(
    ui: AirflowUI, stack: LiveStack
) -> None:
    """Fixed with `shipping fix` by ops-ada: the run's Ledger tab shows the order SHIPPED,
    each line's shipment id, and the fix with who, why, old and new; reconciliation clean."""
    doc = stuck_order(stack, 2, refused=2)
    order_id, run_id = doc["order_id"], run_id_for(doc["order_id"])
    fixed = shipping_as(
        stack,
        "ops-ada",
        "fix",
        order_id,
        "--line",
        "2",
        "--sku",
        "TEE-L",
        "--reason",
        "SKU renamed",
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    wait_for_run_state(stack.api, DAG_ID, run_id, "success", timeout=RUN_TIMEOUT_S)
    status = stack.status(order_id)
    assert status["state"] == "SHIPPED"

    ui.open_run(DAG_ID, run_id)
    ui.page.get_by_role("tab", name="Ledger").or_(
        ui.page.get_by_role("link", name="Ledger", exact=True)
    ).first.click()
    ui.page.wait_for_url(f"**/dags/{DAG_ID}/runs/{run_id}/plugin/ledger")
    frame = view_frame(ui, "Ledger")
    expect(frame.get_by_test_id("order-state")).to_have_text("SHIPPED")
    for line in status["lines"]:
        row = frame.locator(f'[data-testid="lines"] tr[data-line="{line["line_id"]}"]')
        expect(row).to_contain_text(line["shipment_id"])
        expect(row).to_contain_text("SHIPPED")
    amendment = frame.get_by_test_id("amendments").get_by_role("row").filter(has_text="FIX")
    expect(amendment).to_contain_text("ops-ada")
    expect(amendment).to_contain_text("SKU renamed")
    expect(amendment).to_contain_text("NOPE-2 x")
    expect(amendment).to_contain_text("TEE-L x")
    expect(frame.get_by_test_id("reconciliation")).to_contain_text("clean")
    ui.screenshot("ledger-view-run.png")

    # The task instance page of line 2 (map index 1) has its own Ledger tab: that line.
    ui.page.goto(
        f"{ui.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/ship_item/mapped/1/plugin/ledger-line"
    )
    line_frame = view_frame(ui, "Ledger")
    expect(line_frame.locator('[data-testid="lines"] tr[data-line="2"]')).to_contain_text(
        status["lines"][1]["shipment_id"]
    )
    expect(line_frame.locator('[data-testid="lines"] tr[data-line="1"]')).to_have_count(0)


def test_the_plugins_api_refuses_an_unauthenticated_request(stack: LiveStack) -> None:
    """No token: 401 on every route; a forged cookie: 403; Airflow's own token: 200."""
    base = stack.state.airflow_url + PREFIX
    paths = ["/api/open", "/api/orders/ANY", f"/api/runs/{DAG_ID}/order-ANY", "/open"]
    for path in paths:
        assert requests.get(base + path, timeout=30).status_code == 401, path
        forged = requests.get(base + path, cookies={"_token": "forged"}, timeout=30)
        assert forged.status_code == 403, path
    token = requests.post(
        f"{stack.state.airflow_url}/auth/token",
        json={"username": "admin", "password": stack.state.admin_password},
        timeout=30,
    ).json()["access_token"]
    answer = requests.get(
        base + "/api/open", headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["orders"], list)
