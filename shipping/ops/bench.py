"""``make bench``: trigger -> ``SHIPPED`` latency on the local stack.

Posts orders of 1, 10 and 100 lines over Airflow's REST API, one at a time, and measures
from the moment the trigger is answered to the moment the ledger shows the order
``SHIPPED`` (polled every 0.2 s). Starts the stack if it is not up and stops it after.

``python -m shipping.ops.bench [--sizes 1 10 100] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ledger import Ledger, OrderState
from shipping.ops.airflow_api import AirflowClient, TriggerStatus
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack, running_stack
from shipping.ops.state import StackState
from shipping.order import run_id_for

POLL_S = 0.2
TIMEOUT_S = 600.0


def time_order(api: AirflowClient, ledger: Ledger, lines: int) -> float:
    """Seconds from an order's accepted trigger to ``SHIPPED`` in the ledger."""
    doc = sample_order(f"BENCH-{uuid.uuid4().hex[:10]}", lines)
    outcome = api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
    started = time.monotonic()
    if outcome.status is not TriggerStatus.ACCEPTED:
        raise RuntimeError(f"trigger refused: {outcome.reason}")
    while time.monotonic() - started < TIMEOUT_S:
        status = ledger.get_order(doc["order_id"])
        if status is not None and status.state == OrderState.SHIPPED:
            return time.monotonic() - started
        time.sleep(POLL_S)
    raise TimeoutError(f"order of {lines} lines not SHIPPED after {TIMEOUT_S:.0f} s")


def run(state: StackState, sizes: list[int], repeat: int) -> None:
    """Time each size ``repeat`` times and print a table."""
    ledger = Ledger.from_url(state.ledger_url)
    with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
        time_order(api, ledger, 1)  # warm-up: the first run pays for cold caches
        print(f"{'lines':>5}  {'runs':>4}  {'median s':>8}  {'min s':>6}  {'max s':>6}")
        for size in sizes:
            seconds = [time_order(api, ledger, size) for _ in range(repeat)]
            print(
                f"{size:>5}  {repeat:>4}  {statistics.median(seconds):>8.1f}  "
                f"{min(seconds):>6.1f}  {max(seconds):>6.1f}",
                flush=True,
            )
    ledger.dispose()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``."""
    parser = argparse.ArgumentParser(prog="python -m shipping.ops.bench")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with running_stack(Stack()) as state:
        run(state, args.sizes, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
