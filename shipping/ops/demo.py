"""``make demo``: the whole product in one command.

Starts the local stack (unless it is up already), posts three sample orders over
Airflow's REST API (a small one, one of 25 lines, and one that meets injected warehouse
faults: server errors, commits answered with an error, throttling), shows progress,
prints a table per order, and checks what matters: every order ``SHIPPED`` and exactly one
warehouse shipment per line. Stops the stack it started. Exit code 0 only if all holds.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ledger import Ledger
from shipping.ops.airflow_api import AirflowClient, TriggerStatus
from shipping.ops.render import render_status
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack, running_stack
from shipping.ops.state import StackState
from shipping.order import parse_order
from shipping.warehouse import WarehouseAdmin, WarehouseClient

FAULTS: Mapping[str, Any] = {
    "error_rate": 0.2,
    "commit_then_error_rate": 0.2,
    "throttle_rate": 0.2,
    "retry_after_seconds": 1,
    "seed": 7,
}


def _post_and_wait(
    api: AirflowClient, ledger: Ledger, orders: list[dict[str, Any]], timeout: float
) -> dict[str, str]:
    """Post orders, print progress until their runs end; return each run's state."""
    for doc in orders:
        order = parse_order(doc)
        outcome = api.trigger(DAG_ID, order.run_id, doc)
        if outcome.status is TriggerStatus.REFUSED:
            raise RuntimeError(f"order {order.order_id} refused: {outcome.reason}")
        print(f"posted {order.order_id} ({len(order.items)} lines): {outcome.status.value}")
    pending = {doc["order_id"]: parse_order(doc).run_id for doc in orders}
    finished: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    last = ""
    while pending and time.monotonic() < deadline:
        parts = []
        for order_id, run_id in list(pending.items()):
            run = api.get_run(DAG_ID, run_id)
            state = run["state"] if run else "missing"
            status = ledger.get_order(order_id)
            if status is None:
                parts.append(f"{order_id} registering ({state})")
            else:
                shipped = sum(1 for line in status.lines if line.state == "SHIPPED")
                parts.append(f"{order_id} {shipped}/{len(status.lines)} shipped ({state})")
            if state in ("success", "failed"):
                finished[order_id] = state
                del pending[order_id]
        line = " | ".join(parts)
        if line != last:
            print(f"  {line}", flush=True)
            last = line
        time.sleep(1)
    for order_id in pending:
        finished[order_id] = "timed out"
    return finished


def _check(ledger: Ledger, warehouse: WarehouseClient, order_id: str) -> list[str]:
    """What is wrong with an order after its run: empty when it shipped exactly once."""
    problems = []
    status = ledger.get_order(order_id)
    if status is None:
        return [f"{order_id}: not in the ledger"]
    if status.state != "SHIPPED":
        problems.append(f"{order_id}: state {status.state}, expected SHIPPED")
    shipments = warehouse.list_shipments(order_id)
    per_line = Counter(s["line_id"] for s in shipments)
    by_line = {s["line_id"]: s["shipment_id"] for s in shipments}
    for line in status.lines:
        if per_line[line.line_id] != 1:
            problems.append(f"{order_id}:{line.line_id}: {per_line[line.line_id]} shipments")
        elif by_line[line.line_id] != line.shipment_id:
            problems.append(f"{order_id}:{line.line_id}: ledger and warehouse disagree")
    return problems


def run_demo(state: StackState) -> int:
    """Post the sample orders to a running stack and check them; return the exit code."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    calm = [sample_order(f"DEMO-{stamp}-A", 3), sample_order(f"DEMO-{stamp}-B", 25)]
    stormy = [sample_order(f"DEMO-{stamp}-C", 10)]
    ledger = Ledger.from_url(state.ledger_url)
    admin = WarehouseAdmin(state.warehouse_url, state.warehouse_admin_token)
    with (
        AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api,
        WarehouseClient(state.warehouse_url, state.warehouse_api_token) as warehouse,
    ):
        print("\n== Two orders, the warehouse healthy")
        runs = _post_and_wait(api, ledger, calm, timeout=600)
        print(f"\n== One order while the warehouse fails: {dict(FAULTS)}")
        admin.set_faults(**FAULTS)
        try:
            runs |= _post_and_wait(api, ledger, stormy, timeout=600)
        finally:
            admin.reset_faults()
        problems: list[str] = []
        for doc in calm + stormy:
            order_id = doc["order_id"]
            status = ledger.get_order(order_id)
            print()
            if status is None:
                print(f"order {order_id}: not found")
            else:
                print(render_status(status.to_json()))
            print(f"run: {runs[order_id]}")
            problems += _check(ledger, warehouse, order_id)
    ledger.dispose()
    print()
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: {len(runs)} orders SHIPPED, every line exactly once at the warehouse.")
    return 0


def main() -> int:
    """Entry point of ``make demo``."""
    with running_stack(Stack()) as state:
        return run_demo(state)


if __name__ == "__main__":
    sys.exit(main())
