"""The ledger view's cost per view, and `shipping watch`'s per poll, on 10-, 100- and 1000-line orders.

Starts a stack of its own (a folder under /tmp, free ports, its own embedded PostgreSQL),
posts one order of each size whose last line the warehouse refuses (so each ends needing
an operator, as the views are for), waits for each run to end, then measures against the
API server:

* each view of the plugin (the run's Ledger tab, a line's tab, the order's JSON, Browse →
  Open orders): wall time of the request and CPU time of the API server's processes, the
  median of ``--repeat`` requests;
* one poll of ``shipping watch`` as it was (the ledger's whole order and every task
  instance of the run over the REST API) and as it is (``watching.follow``: the ledger's
  summary and only the instances running or failed).

Run: ``.venv/bin/python bench/ledger_view_cost.py [--sizes 10 100 1000] [--repeat 5]``;
prints a Markdown table and writes the figures as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ledger import Ledger
from shipping.ops.airflow_api import AirflowClient
from shipping.ops.cli import watching
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack
from shipping.order import run_id_for
from shipping.warehouse import WarehouseAdmin

PREFIX = "/shipping-ledger"


def _free_base() -> int:
    for base in range(18600, 19000, 10):
        ports = (base, base + 1, base + 894, base + 895)
        if all(socket.socket().connect_ex(("127.0.0.1", p)) != 0 for p in ports):
            return base
    raise RuntimeError("no free ports")


def _api_server_cpu(stack: Stack) -> Callable[[], float]:
    """A function giving the API server's processes' CPU seconds so far."""
    [service] = [s for s in stack.services() if s.name == "api-server"]
    root = psutil.Process(service.pid)

    def cpu() -> float:
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    return cpu


def _wait_for_end(api: AirflowClient, run_id: str, timeout: float = 3600) -> str:
    """Poll the run until it ends; a busy API server's timeout is asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = api.get_run(DAG_ID, run_id)
        except requests.RequestException:
            run = None
        if run is not None and run["state"] in ("success", "failed"):
            return str(run["state"])
        time.sleep(5)
    raise TimeoutError(f"run {run_id} still running after {timeout:.0f} s")


def _measure(call: Callable[[], Any], cpu: Callable[[], float], repeat: int) -> dict[str, float]:
    """Median wall and API-server CPU milliseconds of ``call`` (one warm-up call first)."""
    call()
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0, wall0 = cpu(), time.perf_counter()
        call()
        walls.append((time.perf_counter() - wall0) * 1000)
        cpus.append((cpu() - cpu0) * 1000)
    return {
        "wall_ms": round(statistics.median(walls), 1),
        "cpu_ms": round(statistics.median(cpus), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/ledger-view-cost.json"))
    args = parser.parse_args()

    base = _free_base()
    env = {
        **os.environ,
        "SHIPPING_STACK_DIR": tempfile.mkdtemp(prefix="ledger-view-bench-"),
        "SHIPPING_AIRFLOW_PORT": str(base),
        "SHIPPING_WAREHOUSE_PORT": str(base + 1),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "WAREHOUSE_API_TOKEN": secrets.token_urlsafe(16),
        "WAREHOUSE_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "SHIPPING_EXECUTOR": "local",
    }
    env.pop("SHIPPING_POSTGRES_URL", None)
    stack = Stack(env=env, echo=print)
    state = stack.up()
    results: dict[str, Any] = {"sizes": {}, "load_average": os.getloadavg()}
    try:
        admin = WarehouseAdmin(state.warehouse_url, state.warehouse_admin_token)
        admin.set_faults(reject_skus=["NOPE-*"])
        ledger = Ledger.from_url(state.ledger_url)
        cpu = _api_server_cpu(stack)
        with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
            token = requests.post(
                f"{state.airflow_url}/auth/token",
                json={"username": AIRFLOW_ADMIN_USER, "password": state.admin_password},
                timeout=30,
            ).json()["access_token"]
            http = requests.Session()
            http.headers["Authorization"] = f"Bearer {token}"
            orders = {}
            for size in args.sizes:
                doc = sample_order(f"COST-{size}-{secrets.token_hex(3)}", size)
                doc["items"][-1]["sku"] = "NOPE-LAST"
                api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
                orders[size] = doc
            started = time.monotonic()
            for size, doc in orders.items():
                state_now = _wait_for_end(api, run_id_for(doc["order_id"]))
                print(f"{size} lines: run {state_now} after {time.monotonic() - started:.0f} s")
            for size, doc in orders.items():
                order_id, run_id = doc["order_id"], run_id_for(doc["order_id"])
                base_url = state.airflow_url + PREFIX

                def get(path: str, base_url: str = base_url) -> Callable[[], Any]:
                    def call() -> None:
                        answer = http.get(base_url + path, timeout=300)
                        answer.raise_for_status()

                    return call

                def old_poll(order_id: str = order_id, run_id: str = run_id) -> None:
                    ledger.get_order(order_id)
                    api.get_run(DAG_ID, run_id)
                    api.task_instances(DAG_ID, run_id)

                def new_poll(order_id: str = order_id) -> None:
                    watching.follow(ledger, api, order_id)

                results["sizes"][size] = {
                    "run_tab": _measure(get(f"/runs/{DAG_ID}/{run_id}"), cpu, args.repeat),
                    "line_tab": _measure(get(f"/runs/{DAG_ID}/{run_id}/lines/0"), cpu, args.repeat),
                    "order_json": _measure(get(f"/api/orders/{order_id}"), cpu, args.repeat),
                    "open_orders": _measure(get("/open"), cpu, args.repeat),
                    "watch_poll_before": _measure(old_poll, cpu, args.repeat),
                    "watch_poll_now": _measure(new_poll, cpu, args.repeat),
                }
                print(size, json.dumps(results["sizes"][size]))
        ledger.dispose()
    finally:
        stack.down(quiet=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        ("run's Ledger tab (HTML, with reconciliation)", "run_tab"),
        ("a line's Ledger tab (HTML)", "line_tab"),
        ("order JSON (`/api/orders/ID`)", "order_json"),
        ("Browse → Open orders (all open orders)", "open_orders"),
        ("`shipping watch`, one poll, before", "watch_poll_before"),
        ("`shipping watch`, one poll, now", "watch_poll_now"),
    ]
    sizes = list(results["sizes"])
    print("| view | " + " | ".join(f"{s} lines: wall / API-server CPU ms" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for label, key in rows:
        cells = [
            f"{results['sizes'][s][key]['wall_ms']} / {results['sizes'][s][key]['cpu_ms']}"
            for s in sizes
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
