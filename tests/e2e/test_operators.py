"""The operator commands on the real stack: retry, watch, fix, cancel, reconcile.

Each test makes its own trouble (the warehouse refuses a SKU, a shipment is made behind
the ledger's back, a ledger row is edited by hand), then resolves it only through the
``shipping`` command and Airflow's REST API, and checks every exit code it meets.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from shipping.contract import DAG_ID
from shipping.ledger import Ledger, order_lines
from shipping.ops.airflow_api import TriggerStatus
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300


def failing_order(stack: LiveStack, lines: int, refused: list[int]) -> dict[str, Any]:
    """Post an order whose lines at ``refused`` (1-based) the warehouse refuses; wait until
    each of them failed and waits for a decision (the run keeps running)."""
    doc = sample_order(f"OPS-{uuid.uuid4().hex[:10]}", lines)
    for number in refused:
        doc["items"][number - 1]["sku"] = f"NOPE-{number}"
    stack.admin.set_faults(reject_skus=["NOPE-*"])
    assert stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc).status is (
        TriggerStatus.ACCEPTED
    )
    assert waiting_decisions(stack, doc, len(refused)) == {n - 1 for n in refused}
    return doc


def waiting_decisions(stack: LiveStack, doc: dict[str, Any], count: int) -> set[int]:
    """Wait until ``count`` lines' decisions wait for an answer; their map indexes."""
    run_id = run_id_for(doc["order_id"])
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        waiting = {
            ti["map_index"]
            for ti in stack.api.task_instances(DAG_ID, run_id)
            if ti["task_id"] == "decide_line" and ti["state"] == "awaiting_input"
        }
        if len(waiting) >= count:
            return waiting
        assert stack.api.get_run(DAG_ID, run_id)["state"] in ("queued", "running")
        assert time.monotonic() < deadline, f"{doc['order_id']}: decisions waiting: {waiting}"
        time.sleep(1.0)


def run_state(stack: LiveStack, doc: dict[str, Any]) -> str:
    run = stack.api.wait_for_run(DAG_ID, run_id_for(doc["order_id"]), timeout=RUN_TIMEOUT_S)
    return str(run["state"])


def wait_until_done(stack: LiveStack, doc: dict[str, Any]) -> dict[str, Any]:
    """`shipping watch` until the order is done; its status."""
    result = stack.shipping("watch", doc["order_id"], "--timeout", str(RUN_TIMEOUT_S))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"order {doc['order_id']} is SHIPPED" in result.stdout
    return stack.status(doc["order_id"])


def tries(stack: LiveStack, doc: dict[str, Any]) -> dict[int, int]:
    """Try number of each ship_item instance, by map index."""
    instances = stack.api.mapped_instances(DAG_ID, run_id_for(doc["order_id"]), "ship_item")
    return {ti["map_index"]: ti["try_number"] for ti in instances}


def shipments(stack: LiveStack, doc: dict[str, Any]) -> Counter[str]:
    return Counter(s["line_id"] for s in stack.warehouse.list_shipments(doc["order_id"]))


def test_retry_clears_one_named_line_then_all_failed_lines(stack: LiveStack) -> None:
    """`retry --line` clears that line only; `retry` all the failed rest; then nothing."""
    doc = failing_order(stack, 3, refused=[2, 3])
    stack.admin.reset_faults()
    one = stack.shipping("retry", doc["order_id"], "--line", "2")
    assert one.returncode == 0, one.stderr
    assert "retrying line(s) 2 and finalize_order" in one.stdout
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while stack.status(doc["order_id"])["lines"][1]["state"] != "SHIPPED":
        assert time.monotonic() < deadline
        time.sleep(1.0)
    assert waiting_decisions(stack, doc, 1) == {2}  # line 3 still waits for a decision
    assert tries(stack, doc) == {0: 1, 1: 2, 2: 1}
    rest = stack.shipping("retry", doc["order_id"])
    assert rest.returncode == 0, rest.stderr
    assert "retrying line(s) 3 and finalize_order" in rest.stdout
    status = wait_until_done(stack, doc)
    assert status["state"] == "SHIPPED"
    assert tries(stack, doc) == {0: 1, 1: 2, 2: 2}
    assert shipments(stack, doc) == Counter({"1": 1, "2": 1, "3": 1})
    again = stack.shipping("retry", doc["order_id"])
    assert (again.returncode, "nothing to retry" in again.stdout) == (0, True)


def test_retry_and_watch_of_an_unknown_order_or_line_exit_1(stack: LiveStack) -> None:
    """Unknown orders and lines are named, with exit code 1."""
    for args in (
        ("retry", "NOPE-404"),
        ("watch", "NOPE-404", "--timeout", "5"),
        ("fix", "NOPE-404", "--line", "1", "--sku", "X", "--reason", "r"),
        ("cancel", "NOPE-404", "--line", "1", "--reason", "r"),
        ("reconcile", "NOPE-404"),
    ):
        result = stack.shipping(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "NOPE-404" in result.stderr, args
    doc = failing_order(stack, 1, refused=[1])
    result = stack.shipping("retry", doc["order_id"], "--line", "9")
    assert (result.returncode, "no line '9'" in result.stderr) == (1, True)


def test_a_refused_line_needs_an_operator_and_a_fix_completes_the_order(
    stack: LiveStack,
) -> None:
    """watch exits 3 naming `shipping fix`; the fix ships the line once, under its key."""
    doc = failing_order(stack, 2, refused=[2])
    watched = stack.shipping("watch", doc["order_id"], "--timeout", "60")
    assert watched.returncode == 3, watched.stdout + watched.stderr
    assert f"shipping fix {doc['order_id']} --line 2" in watched.stdout
    fixed = stack.shipping(
        "fix", doc["order_id"], "--line", "2", "--sku", "MUG-BLUE", "--reason", "SKU renamed"
    )
    assert fixed.returncode == 0, fixed.stderr
    quantity = doc["items"][1]["quantity"]
    assert f"fixed: now MUG-BLUE x{quantity}" in fixed.stdout
    status = wait_until_done(stack, doc)
    assert [(x["sku"], x["state"]) for x in status["lines"]] == [
        ("MUG-RED", "SHIPPED"),
        ("MUG-BLUE", "SHIPPED"),
    ]
    [amendment] = status["amendments"]
    assert (amendment["action"], amendment["reason"], amendment["old"]["sku"]) == (
        "FIX",
        "SKU renamed",
        "NOPE-2",
    )
    [line2] = [s for s in stack.warehouse.list_shipments(doc["order_id"]) if s["line_id"] == "2"]
    assert (line2["sku"], line2["idempotency_key"]) == ("MUG-BLUE", f"{doc['order_id']}:2#1")
    text = stack.shipping("status", doc["order_id"]).stdout
    assert "fix of line 2 by" in text
    assert f"NOPE-2 x{quantity} -> MUG-BLUE x{quantity} (SKU renamed)" in text
    refused = stack.shipping(
        "fix", doc["order_id"], "--line", "2", "--quantity", "3", "--reason", "again"
    )
    assert refused.returncode == 2
    assert "SHIPPED" in refused.stderr


def test_cancel_lets_the_order_finalize_without_the_line(stack: LiveStack) -> None:
    """A cancelled line is never posted; the order is SHIPPED with one cancelled line."""
    doc = failing_order(stack, 2, refused=[1])
    cancelled = stack.shipping("cancel", doc["order_id"], "--line", "1", "--reason", "discontinued")
    assert cancelled.returncode == 0, cancelled.stderr
    status = wait_until_done(stack, doc)
    assert (status["state"], status["cancelled_lines"]) == ("SHIPPED", 1)
    assert [x["state"] for x in status["lines"]] == ["CANCELLED", "SHIPPED"]
    assert shipments(stack, doc) == Counter({"2": 1})
    again = stack.shipping("cancel", doc["order_id"], "--line", "1", "--reason", "twice")
    assert again.returncode == 2


def test_watch_times_out_with_4_on_an_order_still_running(stack: LiveStack) -> None:
    """A slow warehouse keeps the order going past the timeout: exit 4."""
    stack.admin.set_faults(latency_ms=20_000)
    doc = sample_order(f"OPS-{uuid.uuid4().hex[:10]}", 1)
    path_result = stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
    assert path_result.status is TriggerStatus.ACCEPTED
    watched = stack.shipping("watch", doc["order_id"], "--timeout", "3")
    assert watched.returncode == 4, watched.stdout + watched.stderr
    assert "still" in watched.stdout
    stack.admin.reset_faults()
    assert run_state(stack, doc) == "success"


def test_reconcile_finds_each_drift_and_repairs_only_what_is_safe(stack: LiveStack) -> None:
    """A shipment made behind the ledger's back is adopted; a hand-edited row is only reported."""
    doc = failing_order(stack, 2, refused=[2])
    stack.admin.reset_faults()
    item = doc["items"][1]
    made = stack.warehouse.create_shipment(
        order_id=doc["order_id"],
        line_id="2",
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=doc["ship_to"],
    )
    ledger = Ledger.from_url(stack.state.ledger_url)
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(order_lines)
            .where(order_lines.c.order_id == doc["order_id"], order_lines.c.line_id == "1")
            .values(quantity=7)
        )
    ledger.dispose()
    checked = stack.shipping("reconcile", doc["order_id"], "--json")
    assert checked.returncode == 4, checked.stderr
    report = json.loads(checked.stdout)
    assert sorted((d["line_id"], d["kind"], d["repairable"]) for d in report["drift"]) == [
        ("1", "CONTENT_DIFFERS", False),
        ("2", "UNRECORDED_SHIPMENT", True),
    ]
    repaired = stack.shipping("reconcile", doc["order_id"], "--repair", "--json")
    assert repaired.returncode == 4  # the hand edit is left for a person
    after = json.loads(repaired.stdout)
    assert [(r["line_id"], r["shipment_id"]) for r in after["repaired"]] == [
        ("2", made.shipment_id)
    ]
    assert [d["kind"] for d in after["drift"]] == ["CONTENT_DIFFERS"]
    status = stack.status(doc["order_id"])
    assert status["lines"][1]["shipment_id"] == made.shipment_id
    # The scheduled check fails visibly, naming the order.
    run_id = f"check-{uuid.uuid4().hex[:8]}"
    assert stack.api.trigger("reconcile_ledger", run_id, {}).status is TriggerStatus.ACCEPTED
    run = stack.api.wait_for_run("reconcile_ledger", run_id, timeout=RUN_TIMEOUT_S)
    assert run["state"] == "failed"
    log = stack.api.task_log("reconcile_ledger", run_id, "check_ledger", 1)
    assert doc["order_id"] in log
    # Put the row back: the order is clean, and retry lets it finalize without a post.
    ledger = Ledger.from_url(stack.state.ledger_url)
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(order_lines)
            .where(order_lines.c.order_id == doc["order_id"], order_lines.c.line_id == "1")
            .values(quantity=doc["items"][0]["quantity"])
        )
    ledger.dispose()
    clean = stack.shipping("reconcile", doc["order_id"])
    assert clean.returncode == 0, clean.stdout
    assert "1 order(s) checked: clean" in clean.stdout
    retried = stack.shipping("retry", doc["order_id"])
    assert retried.returncode == 0, retried.stderr
    assert wait_until_done(stack, doc)["state"] == "SHIPPED"
    assert shipments(stack, doc) == Counter({"1": 1, "2": 1})


def test_the_amend_dag_records_a_fix_and_a_cleared_line_ships_it(stack: LiveStack) -> None:
    """The UI path over REST: amend_order_line's form, then a clear of the failed line."""
    doc = failing_order(stack, 2, refused=[2])
    run_id = f"amend-{uuid.uuid4().hex[:8]}"
    form = {
        "order_id": doc["order_id"],
        "line_id": "2",
        "action": "fix",
        "sku": "TEE-L",
        "quantity": None,
        "reason": "renamed in the catalogue",
    }
    assert stack.api.trigger("amend_order_line", run_id, form).status is TriggerStatus.ACCEPTED
    assert stack.api.wait_for_run("amend_order_line", run_id, timeout=RUN_TIMEOUT_S)["state"] == (
        "success"
    )
    [amendment] = stack.status(doc["order_id"])["amendments"]
    assert (amendment["by"], amendment["new"]["sku"]) == ("admin", "TEE-L")
    # What the UI's clear dialog does, with Downstream selected: the line, and its decision
    # still waiting (the dialog clears whatever the state; the client's clear only failed).
    stack.api.clear_mapped(DAG_ID, run_id_for(doc["order_id"]), "ship_item", [1])
    stack.api.clear_waiting(DAG_ID, run_id_for(doc["order_id"]), "decide_line", [1])
    assert wait_until_done(stack, doc)["state"] == "SHIPPED"
    assert [
        s["sku"] for s in stack.warehouse.list_shipments(doc["order_id"]) if s["line_id"] == "2"
    ] == ["TEE-L"]
    # A second correction of the now shipped line fails the amend run, final, saying why.
    again = f"amend-{uuid.uuid4().hex[:8]}"
    assert stack.api.trigger("amend_order_line", again, form).status is TriggerStatus.ACCEPTED
    assert stack.api.wait_for_run("amend_order_line", again, timeout=RUN_TIMEOUT_S)["state"] == (
        "failed"
    )
    assert "SHIPPED" in stack.api.task_log("amend_order_line", again, "amend_line", 1)
