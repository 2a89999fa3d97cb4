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
from shipping.ledger import Ledger, LineState
from shipping.ops.airflow_api import AirflowApiError, AirflowClient
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
    """Median wall and API-server CPU milliseconds of ``call`` (one warm-up call first).

    A call that fails (a loaded API server answers 500 or times out at times) is made
    again, up to three times; only the successful call is counted.
    """

    def once() -> None:
        for attempt in range(3):
            try:
                call()
                return
            except (requests.RequestException, AirflowApiError):
                if attempt == 2:
                    raise

    once()
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0, wall0 = cpu(), time.perf_counter()
        once()
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
    parser.add_argument(
        "--attach",
        type=Path,
        help="measure the COST-* orders of a stack this script started (its folder), now, "
        "without waiting for their runs to end",
    )
    args = parser.parse_args()
    if args.attach:
        from shipping.ops.state import load_state

        os.environ["SHIPPING_STACK_DIR"] = str(args.attach)
        attached = load_state()
        assert attached is not None, f"no stack state in {args.attach}"
        stack = Stack(env={**os.environ}, echo=print)
        ledger = Ledger.from_url(attached.ledger_url)
        found: dict[int, str] = {}
        for order_id in ledger.order_ids():
            if order_id.startswith("COST-"):
                found[int(order_id.split("-")[1])] = order_id
        results = {"sizes": {}, "load_average": os.getloadavg(), "attached": True}
        with AirflowClient(
            attached.airflow_url, AIRFLOW_ADMIN_USER, attached.admin_password, timeout=600
        ) as api:
            for size in sorted(found):
                summary = ledger.order_summary(found[size])
                assert summary is not None
                results["sizes"][size] = _measure_order(
                    attached, api, ledger, _api_server_cpu(stack), found[size], args.repeat
                )
                results["sizes"][size]["lines_shipped_at_measure"] = summary.counts.get(
                    LineState.SHIPPED, 0
                )
                print(size, json.dumps(results["sizes"][size]), flush=True)
        ledger.dispose()
        _report(results, args.out)
        return

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
        with AirflowClient(
            state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password, timeout=600
        ) as api:
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
                results["sizes"][size] = _measure_order(
                    state, api, ledger, cpu, doc["order_id"], args.repeat
                )
                print(size, json.dumps(results["sizes"][size]), flush=True)
        ledger.dispose()
    finally:
        stack.down(quiet=True)
    _report(results, args.out)


def _measure_order(
    state: Any,
    api: AirflowClient,
    ledger: Ledger,
    cpu: Callable[[], float],
    order_id: str,
    repeat: int,
) -> dict[str, Any]:
    """Every view of one order, and a watch poll before and now."""
    run_id = run_id_for(order_id)
    token = requests.post(
        f"{state.airflow_url}/auth/token",
        json={"username": AIRFLOW_ADMIN_USER, "password": state.admin_password},
        timeout=120,
    ).json()["access_token"]
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    base_url = state.airflow_url + PREFIX

    def get(path: str) -> Callable[[], Any]:
        def call() -> None:
            answer = http.get(base_url + path, timeout=600)
            answer.raise_for_status()

        return call

    def old_poll() -> None:
        ledger.get_order(order_id)
        api.get_run(DAG_ID, run_id)
        api.task_instances(DAG_ID, run_id)

    def new_poll() -> None:
        watching.follow(ledger, api, order_id)

    return {
        "run_tab": _measure(get(f"/runs/{DAG_ID}/{run_id}"), cpu, repeat),
        "line_tab": _measure(get(f"/runs/{DAG_ID}/{run_id}/lines/0"), cpu, repeat),
        "order_json": _measure(get(f"/api/orders/{order_id}"), cpu, repeat),
        "open_orders": _measure(get("/open"), cpu, repeat),
        "watch_poll_before": _measure(old_poll, cpu, repeat),
        "watch_poll_now": _measure(new_poll, cpu, repeat),
    }


def _report(results: dict[str, Any], out: Path) -> None:
    """Write the figures as JSON and print them as a Markdown table."""
    out.write_text(json.dumps(results, indent=2) + "\n")
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
