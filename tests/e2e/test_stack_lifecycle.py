"""`make up` / `make down` behaviour, on the session's stack (runs after the order flow)."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path

import psutil
import pytest

from shipping.contract import DAG_ID
from shipping.ops.stack import Stack
from tests.e2e.conftest import LiveStack

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_twice_says_it_is_already_up(stack: LiveStack) -> None:
    """A second `up` changes nothing and says so."""
    before = {s.name: s.pid for s in Stack(env=stack.env, echo=lambda _: None).services()}
    said: list[str] = []
    state = Stack(env=stack.env, echo=said.append).up()
    assert state.pids == before
    assert said == [f"The stack is already up: Airflow {stack.state.airflow_url}"]


def test_the_stack_folder_and_its_logs_are_the_owners_alone(stack: LiveStack) -> None:
    """The folder is 0700 and no file in it (logs with customer addresses, secrets, the
    state) can be read by another user."""
    folder = Path(stack.env["SHIPPING_STACK_DIR"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    readable = [
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and path.name != "supervisor.sock"
        and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert readable == []


def test_status_shows_every_service_running(stack: LiveStack) -> None:
    """`status` lists each service with state, pid, uptime and restarts, and exits 0."""
    said: list[str] = []
    assert Stack(env=stack.env, echo=said.append).status() == 0
    services = {"warehouse", "api-server", "scheduler", "dag-processor", "triggerer"}
    assert said[0].split() == ["service", "state", "pid", "uptime", "restarts"]
    rows = {line.split()[0]: line.split() for line in said[1 : 1 + len(services)]}
    assert set(rows) == services
    assert all(row[1] == "RUNNING" and row[4].isdigit() for row in rows.values())


def test_up_after_supervisord_died_restarts_it_and_leaves_no_orphan(stack: LiveStack) -> None:
    """kill -9 of supervisord: `up` kills what it left running and starts everything anew."""
    lifecycle = Stack(env=stack.env, echo=lambda _: None)
    old = lifecycle.supervisor.pid()
    assert old is not None
    old_services = {s.pid for s in lifecycle.services()}
    os.kill(old, signal.SIGKILL)
    lifecycle.up()
    assert lifecycle.supervisor.pid() not in (None, old)
    assert all(lifecycle.running().values())
    assert not any(psutil.pid_exists(pid) for pid in old_services)
    assert not [p.pid for p in psutil.process_iter() if _session(p.pid) == old]
    assert stack.warehouse.health()


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_the_pool_and_an_unpaused_dag_exist_after_up(stack: LiveStack) -> None:
    """The stack's bootstrap created the pool and made order_intake runnable."""
    pool = stack.api.request("GET", "/pools/warehouse").json()
    assert pool["slots"] >= 1
    dag = stack.api.request("GET", f"/dags/{DAG_ID}").json()
    assert dag["is_paused"] is False


def test_down_frees_the_ports_and_up_works_again(stack: LiveStack) -> None:
    """`down` stops every process it started and frees the ports; `up` comes back healthy."""
    ports = [stack.state.airflow_url.rsplit(":", 1)[1], stack.state.warehouse_url.rsplit(":", 1)[1]]
    lifecycle = Stack(env=stack.env, echo=lambda _: None)
    assert lifecycle.down() is True
    assert not any(listening(int(p)) for p in ports)
    assert lifecycle.running() == {}
    state = lifecycle.up()
    assert all(lifecycle.running().values())
    assert set(state.pids) == {"warehouse", "api-server", "scheduler", "dag-processor", "triggerer"}
    assert stack.warehouse.health()
