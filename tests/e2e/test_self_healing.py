"""Self-healing on the session's stack: kill -9 a service or a task mid-order, it comes back.

Each test keeps an order running (the warehouse's ``latency_ms`` fault), kills one
process with SIGKILL, and checks what happened: the process came back by itself, the
other services were not touched, and the order completed with exactly one warehouse
shipment per line. How long recovery took is recorded as a test property (see
docs/operator-runbook.md, "Recovery, measured"), not asserted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import datetime

import psutil
import pytest
import requests

from shipping.contract import DAG_ID
from shipping.ops.stack import Stack
from shipping.ops.supervision import ServiceInfo
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.support import (
    RUN_TIMEOUT_S,
    assert_completed_once,
    listening_sockets,
    running_lines,
    services,
    start_slow_order,
    wait_for,
)

pytestmark = pytest.mark.e2e


def kill_service(stack: LiveStack, name: str) -> tuple[ServiceInfo, dict[str, ServiceInfo]]:
    before = services(stack)
    os.kill(before[name].pid, signal.SIGKILL)
    return before[name], before


def assert_others_untouched(
    stack: LiveStack, name: str, before: dict[str, ServiceInfo], *, also: tuple[str, ...] = ()
) -> None:
    after = services(stack)
    for other, info in before.items():
        if other != name and other not in also:
            assert after[other].pid == info.pid, f"{other} was restarted"


def test_a_killed_task_process_runs_its_line_again(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """kill -9 of a running ship_item (task and its supervisor): the line runs again, once."""
    doc = start_slow_order(stack, 3)
    victim = running_lines(stack, doc)[0]
    task = psutil.Process(victim["pid"])
    parent = task.parent()
    assert parent is not None
    killed_at = time.monotonic()
    for proc in (parent, task):
        proc.kill()
    stack.admin.reset_faults()

    def running_again() -> bool:
        for ti in stack.api.mapped_instances(DAG_ID, run_id_for(doc["order_id"]), "ship_item"):
            if ti["map_index"] == victim["map_index"]:
                return bool(
                    ti["try_number"] > victim["try_number"]
                    and ti["state"] in ("running", "success")
                )
        return False

    wait_for(running_again, RUN_TIMEOUT_S, "the killed line to run again")
    record_property("task_kill_to_line_running_s", round(time.monotonic() - killed_at, 1))
    assert_completed_once(stack, doc)


def test_a_killed_scheduler_comes_back_and_the_order_completes_once(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """kill -9 of the scheduler mid-order: supervisord restarts it alone; one shipment per line."""
    doc = start_slow_order(stack, 4)
    old, before = kill_service(stack, "scheduler")
    killed_at, killed_wall = time.monotonic(), datetime.now().astimezone()
    stack.admin.reset_faults()
    new = wait_for(
        lambda: (s := services(stack)["scheduler"]).running and s.pid != old.pid and s,
        60,
        "a new scheduler process",
    )
    record_property("scheduler_kill_to_process_s", round(time.monotonic() - killed_at, 1))

    def heartbeat_after_kill() -> bool:
        health = requests.get(f"{stack.state.airflow_url}/api/v2/monitor/health", timeout=5).json()
        beat = (health.get("scheduler") or {}).get("latest_scheduler_heartbeat")
        return bool(beat) and datetime.fromisoformat(beat) > killed_wall

    wait_for(heartbeat_after_kill, 120, "a heartbeat of the new scheduler")
    record_property("scheduler_kill_to_heartbeat_s", round(time.monotonic() - killed_at, 1))
    # Read now: the wrapper counts a start before it execs, which can be after RUNNING.
    assert new.pid == services(stack)["scheduler"].pid
    assert services(stack)["scheduler"].restarts >= 1
    assert_others_untouched(stack, "scheduler", before)
    # What the dead scheduler started (its LocalExecutor workers) is gone with it.
    with pytest.raises(ProcessLookupError):
        os.killpg(old.pid, 0)
    assert_completed_once(stack, doc)


def test_a_killed_warehouse_comes_back_and_the_order_completes_once(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """kill -9 of the warehouse mid-order: it restarts alone; one shipment per line."""
    doc = start_slow_order(stack, 3)
    old, before = kill_service(stack, "warehouse")
    killed_at = time.monotonic()
    wait_for(
        lambda: (s := services(stack)["warehouse"]).running and s.pid != old.pid,
        60,
        "a new warehouse process",
    )
    wait_for(stack.warehouse.health, 60, "the warehouse to answer")
    record_property("warehouse_kill_to_healthy_s", round(time.monotonic() - killed_at, 1))
    assert_others_untouched(stack, "warehouse", before)
    assert_completed_once(stack, doc)


def test_every_listening_socket_of_the_stack_is_on_loopback(stack: LiveStack) -> None:
    """Every TCP listener of supervisord's process tree is on 127.0.0.1."""
    ports = Stack(env=stack.env, echo=lambda _: None).ports
    assert listening_sockets(stack) == {
        ("127.0.0.1", ports.airflow),
        ("127.0.0.1", ports.warehouse),
        ("127.0.0.1", ports.scheduler_health),
    }


def test_up_on_a_half_running_stack_starts_only_the_missing_service(stack: LiveStack) -> None:
    """A stopped warehouse is started again by `up`; the other services keep their pids."""
    lifecycle = Stack(env=stack.env, echo=lambda _: None)
    lifecycle.supervisor.stop("warehouse")
    before = services(stack)
    assert before["warehouse"].state == "STOPPED"
    said: list[str] = []
    Stack(env=stack.env, echo=said.append).up()
    after = services(stack)
    assert after["warehouse"].running
    assert stack.warehouse.health()
    assert {n: s.pid for n, s in after.items() if n != "warehouse"} == {
        n: s.pid for n, s in before.items() if n != "warehouse"
    }
    assert said[0] == "Starting what is not running: warehouse ..."
