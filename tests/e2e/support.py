"""What the e2e tests that disturb a running order share: post it slowed, wait, check it."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import psutil

from shipping.contract import DAG_ID
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack
from shipping.ops.supervision import ServiceInfo
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.ui import DECISION_SETTLE_S

RUN_TIMEOUT_S = 400
LATENCY_MS = 5000


def services(stack: LiveStack) -> dict[str, ServiceInfo]:
    return {s.name: s for s in Stack(env=stack.env, echo=lambda _: None).services()}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)
    return result


def start_slow_order(stack: LiveStack, lines: int, latency_ms: int = LATENCY_MS) -> dict[str, Any]:
    """Post an order whose warehouse calls each take ``latency_ms``; return it once a line runs."""
    stack.admin.set_faults(latency_ms=latency_ms)
    doc = sample_order(f"HEAL-{uuid.uuid4().hex[:10]}", lines)
    stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
    wait_for(lambda: running_lines(stack, doc), 120, "a running ship_item")
    return doc


def running_lines(stack: LiveStack, doc: dict[str, Any]) -> list[dict[str, Any]]:
    instances = stack.api.mapped_instances(DAG_ID, run_id_for(doc["order_id"]), "ship_item")
    return [ti for ti in instances if ti["state"] == "running" and ti.get("pid")]


def assert_completed_once(
    stack: LiveStack, doc: dict[str, Any], timeout: float = RUN_TIMEOUT_S
) -> None:
    """The order's run succeeded, SHIPPED, with exactly one warehouse shipment per line."""
    run = stack.api.wait_for_run(DAG_ID, run_id_for(doc["order_id"]), timeout=timeout)
    assert run["state"] == "success"
    shipped = Counter(s["line_id"] for s in stack.warehouse.list_shipments(doc["order_id"]))
    assert shipped == Counter({item["line_id"]: 1 for item in doc["items"]})
    assert stack.status(doc["order_id"])["state"] == "SHIPPED"


def listening_sockets(stack: LiveStack) -> set[tuple[str, int]]:
    """Every TCP (address, port) a process of the stack (supervisord's tree) listens on."""
    pid = Stack(env=stack.env, echo=lambda _: None).supervisor.pid()
    assert pid is not None
    root = psutil.Process(pid)
    listeners = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        listeners |= {
            (c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN
        }
    return listeners


#: The process title of a task process (the one that runs the DAG's code), set by the Task SDK.
TASK_TITLE = "airflow worker -- "


def environments_during_an_order(stack: LiveStack, lines: int = 2) -> dict[str, list[str]]:
    """The environment blocks (/proc/PID/environ) of every process of the stack, read while
    a slowed order's task processes run, by service (``task`` for the task processes,
    ``supervisord`` for itself); returns after the order completed exactly once."""
    seen: dict[str, list[str]] = {}
    doc = start_slow_order(stack, lines, latency_ms=4000)
    deadline = time.monotonic() + 120
    try:
        while "task" not in seen and time.monotonic() < deadline:
            supervisor = Stack(env=stack.env, echo=lambda _: None).supervisor.pid()
            roots = {"supervisord": supervisor} | {s.name: s.pid for s in services(stack).values()}
            for name, pid in roots.items():
                if not pid:
                    continue
                with contextlib.suppress(psutil.Error):
                    root = psutil.Process(pid)
                    tree = [root] if name == "supervisord" else [root, *root.children(True)]
                    for proc in tree:
                        with contextlib.suppress(psutil.Error):
                            title = " ".join(proc.cmdline())
                            environ = "\n".join(f"{k}={v}" for k, v in proc.environ().items())
                            key = "task" if title.startswith(TASK_TITLE) else name
                            seen.setdefault(key, []).append(environ)
            time.sleep(0.2)
    finally:
        stack.admin.reset_faults()
    assert_completed_once(stack, doc)
    return seen


def wait_for_required_action(stack: LiveStack, run_id: str, timeout: float) -> dict[str, Any]:
    """The one required action of ``run_id`` once it waits for an answer (and has settled).

    Fails as soon as the run is no longer queued or running (a refused line must not fail
    the run: its decision waits).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [
            d
            for d in stack.api.hitl_details(DAG_ID, run_id)
            if not d["response_received"] and d["task_instance"]["state"] == "awaiting_input"
        ]
        if waiting:
            [detail] = waiting
            time.sleep(DECISION_SETTLE_S)
            return detail
        assert stack.api.get_run(DAG_ID, run_id)["state"] in ("queued", "running")  # not failed
        time.sleep(1.0)
    raise AssertionError(f"no required action for run {run_id} after {timeout:g} s")
