"""The same pipeline on CeleryExecutor: a stack of its own with Redis and two workers.

The stack is the one ``make up EXECUTOR=celery WORKERS=2`` starts, with two task slots
per worker so that a small order needs both. Each test posts an order whose warehouse
calls are slowed (the ``latency_ms`` fault) so that something is in flight when a worker
or the broker is disturbed, and checks from the outside what users rely on: the order
completes, with exactly one warehouse shipment per line. Recovery times are recorded as
test properties (docs/celery.md quotes them), not asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
from sqlalchemy.engine import make_url

from shipping.connections import ledger_connection, warehouse_connection
from shipping.contract import AIRFLOW_DATABASE, DAG_ID
from shipping.ops import bench_celery, localpg
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack, environment, worker_env
from shipping.order import run_id_for
from tests.e2e import netns
from tests.e2e.conftest import LiveStack, started_stack
from tests.e2e.support import (
    RUN_TIMEOUT_S,
    assert_completed_once,
    environments_during_an_order,
    listening_sockets,
    services,
    start_slow_order,
    wait_for,
)

pytestmark = pytest.mark.e2e
SLOTS_PER_WORKER = 2


@pytest.fixture(scope="module")
def ledger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server of its own for the Celery stack's ledger.

    Workers write the ledger (it is their job), never Airflow's database: with the ledger
    apart, a worker on another host can be given the one and denied the other entirely.
    """
    pgdata = Path(tmp_path_factory.mktemp("ledgerpg")) / "data"
    yield localpg.start(pgdata, keep_running=True)
    localpg.stop(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="module")
def celery(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str, ledger_server: str
) -> Iterator[LiveStack]:
    """A Celery stack (own Redis, worker-1 and worker-2) for this module's tests."""
    ledger = make_url(ledger_server).set(database=f"celery_{uuid.uuid4().hex[:8]}_ledger")
    with started_stack(
        tmp_path_factory,
        postgres_server_url,
        SHIPPING_EXECUTOR="celery",
        SHIPPING_CELERY_WORKERS="2",
        SHIPPING_CELERY_CONCURRENCY=str(SLOTS_PER_WORKER),
        SHIPPING_LEDGER_URL=ledger.render_as_string(hide_password=False),
    ) as stack:
        yield stack


@pytest.fixture
def stack(celery: LiveStack) -> Iterator[LiveStack]:
    """The module's Celery stack, with the warehouse's faults reset after each test."""
    yield celery
    celery.admin.reset_faults()


def ship_items(stack: LiveStack, doc: dict[str, Any]) -> list[dict[str, Any]]:
    return stack.api.mapped_instances(DAG_ID, run_id_for(doc["order_id"]), "ship_item")


def worker_of(ti: dict[str, Any]) -> str:
    """The stack's worker named in a task instance's host name (``worker-2@host``)."""
    return str(ti.get("hostname") or "").partition("@")[0]


def wait_for_lines_running_on(
    stack: LiveStack, doc: dict[str, Any], worker: str
) -> list[dict[str, Any]]:
    """The order's ``ship_item`` instances running on ``worker``, once there is one."""
    running: list[dict[str, Any]] = wait_for(
        lambda: [
            ti
            for ti in ship_items(stack, doc)
            if worker_of(ti) == worker and ti["state"] == "running"
        ],
        RUN_TIMEOUT_S,
        f"a line running on {worker}",
    )
    return running


def scale(stack: LiveStack, workers: int) -> list[str]:
    """``make up WORKERS=n`` on the running stack; what it said."""
    said: list[str] = []
    Stack(env={**stack.env, "SHIPPING_CELERY_WORKERS": str(workers)}, echo=said.append).up()
    return said


def test_the_stack_runs_a_broker_and_two_workers_that_status_lists(stack: LiveStack) -> None:
    """`make status` shows redis, worker-1 and worker-2 running, and exits 0."""
    said: list[str] = []
    assert Stack(env=stack.env, echo=said.append).status() == 0
    table = "\n".join(said)
    for name in ("redis", "worker-1", "worker-2"):
        assert services(stack)[name].running
        assert f"  {name} " in table
    assert stack.state.executor == "celery"


def test_every_listening_socket_of_the_celery_stack_is_on_loopback(stack: LiveStack) -> None:
    """Redis joins the loopback listeners; the workers listen on nothing (no log server)."""
    ports = Stack(env=stack.env, echo=lambda _: None).ports
    assert listening_sockets(stack) == {
        ("127.0.0.1", ports.airflow),
        ("127.0.0.1", ports.warehouse),
        ("127.0.0.1", ports.scheduler_health),
        ("127.0.0.1", ports.redis),
    }


def test_an_order_is_spread_over_both_workers_each_named_in_its_lines(stack: LiveStack) -> None:
    """Every line records the worker that ran it; both workers took lines; one shipment each."""
    doc = start_slow_order(stack, 4 * SLOTS_PER_WORKER, latency_ms=2000)
    assert_completed_once(stack, doc)
    instances = ship_items(stack, doc)
    assert {worker_of(ti) for ti in instances} == {"worker-1", "worker-2"}
    assert all(ti["hostname"].startswith("worker-") for ti in instances)


def test_a_worker_added_mid_order_takes_lines_and_a_stopped_one_finishes_its_own_first(
    stack: LiveStack,
) -> None:
    """WORKERS=3 mid-order: worker-3 runs lines; WORKERS=2: it stops only after they succeed."""
    # Long enough that lines are still waiting once worker-3 is ready (`up` returns then).
    doc = start_slow_order(stack, 32, latency_ms=8000)
    said = scale(stack, 3)
    assert "Adding worker-3 ..." in said
    on_new = wait_for_lines_running_on(stack, doc, "worker-3")
    stack.admin.reset_faults()
    said = scale(stack, 2)  # returns once worker-3 has stopped
    assert any(line.startswith("Stopping worker-3") for line in said)
    assert "worker-3" not in services(stack)
    finished = {ti["map_index"]: ti for ti in ship_items(stack, doc)}
    for ti in on_new:
        # Finished by worker-3 itself, on its first try: the stop interrupted nothing.
        assert finished[ti["map_index"]]["state"] == "success"
        assert finished[ti["map_index"]]["try_number"] == 1
        assert worker_of(finished[ti["map_index"]]) == "worker-3"
    assert_completed_once(stack, doc)
    assert all(ti["try_number"] == 1 for ti in ship_items(stack, doc))


def test_the_broker_restarted_mid_order_loses_nothing_and_ships_nothing_twice(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """kill -9 of Redis while lines are queued and running: it comes back, the order completes."""
    doc = start_slow_order(stack, 10, latency_ms=3000)
    before = services(stack)
    os.kill(before["redis"].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(
        lambda: (s := services(stack)["redis"]).running and s.pid != before["redis"].pid,
        60,
        "a new Redis process",
    )
    record_property("broker_kill_to_process_s", round(time.monotonic() - killed_at, 1))
    # The scheduler may exit while Redis is down (Airflow 3.3.2) and a task it was sending
    # then is sent again only after the queued timeout (300 s): allow for it.
    assert_completed_once(stack, doc, timeout=RUN_TIMEOUT_S + 300)
    assert all(ti["state"] == "success" for ti in ship_items(stack, doc))


def test_a_worker_killed_mid_order_loses_no_line_and_ships_none_twice(
    stack: LiveStack, record_property: Callable[[str, object], None]
) -> None:
    """kill -9 of worker-1 and its task processes: its lines run again elsewhere, once each."""
    doc = start_slow_order(stack, 8, latency_ms=5000)
    lost = wait_for_lines_running_on(stack, doc, "worker-1")
    victim = services(stack)["worker-1"]
    tree = psutil.Process(victim.pid)
    processes = [tree, *tree.children(recursive=True)]
    for proc in processes:  # the whole machine's share of the work, as if it lost power
        with contextlib.suppress(psutil.NoSuchProcess):  # a task process may end meanwhile
            proc.kill()
    killed_at = time.monotonic()
    stack.admin.reset_faults()
    lost_indexes = {ti["map_index"] for ti in lost}

    def lost_lines_running_again() -> bool:
        again = [
            ti
            for ti in ship_items(stack, doc)
            if ti["map_index"] in lost_indexes
            and ti["try_number"] > 1
            and ti["state"] in ("running", "success")
        ]
        return len(again) == len(lost_indexes)

    wait_for(lost_lines_running_again, RUN_TIMEOUT_S, "the lost lines to run again")
    record_property("worker_kill_to_lines_running_s", round(time.monotonic() - killed_at, 1))
    assert_completed_once(stack, doc)
    # supervisord brought the worker back by itself.
    assert wait_for(lambda: services(stack)["worker-1"].running, 60, "worker-1 back")
    assert services(stack)["worker-1"].pid != victim.pid


def test_the_celery_benchmark_measures_bursts_per_worker_count(
    stack: LiveStack, tmp_path: Path
) -> None:
    """make bench-celery's code at a tiny size: one row per worker count, reports written."""
    results = bench_celery.measure(
        stack.env, workers=[1, 2], burst=(2, 2), repeat=1, concurrency=SLOTS_PER_WORKER
    )
    rows = results.rows()
    assert [row["workers"] for row in rows] == [1, 2]
    assert all(row["product_lines_per_s"] > 0 and row["product_cpu_s_per_line"] > 0 for row in rows)
    paths = bench_celery.write_reports(results, tmp_path)
    assert "| 2 | 4 |" in paths[0].read_text()
    assert json.loads(paths[1].read_text())["rows"] == rows
    assert services(stack)["worker-2"].running


def _socket_of(server_url: str) -> Path | None:
    """The Unix socket of a PostgreSQL URL (``?host=/folder``), if it names one."""
    folder = make_url(server_url).query.get("host")
    if not isinstance(folder, str) or not folder.startswith("/"):
        return None
    sockets = sorted(Path(folder).glob(".s.PGSQL.*"))
    return sockets[0] if sockets else None


def test_a_worker_on_another_host_runs_lines_without_airflow_database(
    stack: LiveStack, postgres_server_url: str, ledger_server: str, tmp_path: Path
) -> None:
    """A worker in its own network namespace, given only the API server, Redis, the
    warehouse and the ledger, runs a whole order; Airflow's database is out of its reach."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"no second host can be made here: {reason}")
    state = stack.state
    metadata_socket = _socket_of(postgres_server_url)
    ledger_socket = _socket_of(ledger_server)
    assert ledger_socket is not None
    # Both servers' socket folders are hidden there; the ledger is reached over TCP only.
    hidden = [p.parent for p in (metadata_socket, ledger_socket) if p is not None]
    api, redis, warehouse = (
        urlsplit(url) for url in (state.airflow_url, state.broker_url, state.warehouse_url)
    )
    with netns.other_host(hidden) as host:
        forwards = {
            "api": netns.Forwarder(host.gateway, ("127.0.0.1", api.port or 80)),
            "redis": netns.Forwarder(host.gateway, ("127.0.0.1", redis.port or 6379)),
            "warehouse": netns.Forwarder(host.gateway, ("127.0.0.1", warehouse.port or 80)),
            "ledger": netns.Forwarder(host.gateway, ledger_socket),
        }
        home = tmp_path / "remote"
        dags = home / "dags"
        local = Stack(env=stack.env, echo=lambda _: None)
        airflow_env = environment.airflow_env(local, state)
        shutil.copytree(airflow_env["AIRFLOW__CORE__DAGS_FOLDER"], dags)
        broker = f"redis://:{redis.password}@{host.gateway}:{forwards['redis'].port}"
        ledger = make_url(stack.env["SHIPPING_LEDGER_URL"]).set(
            host=host.gateway, port=forwards["ledger"].port, query={}
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SHIPPING"))},
            **worker_env(airflow_env),
            # Its own home, DAG copy and logs: nothing shared with the stack's machine.
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
                f"http://{host.gateway}:{forwards['api'].port}/execution/"
            ),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": broker,
            "AIRFLOW_CONN_WAREHOUSE_API": json.dumps(
                warehouse_connection(
                    f"http://{host.gateway}:{forwards['warehouse'].port}",
                    state.warehouse_api_token,
                )
            ),
            "AIRFLOW_CONN_SHIPPING_LEDGER": json.dumps(
                ledger_connection(ledger.render_as_string(hide_password=False))
            ),
            "SHIPPING_WORKER_NAME": "remote-1",
        }
        assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env
        metadata = make_url(postgres_server_url).set(
            drivername="postgresql",
            database=stack.env["SHIPPING_DATABASE_PREFIX"] + AIRFLOW_DATABASE,
        )
        probe = host.run(
            [sys.executable, "-c", "import psycopg2, sys; psycopg2.connect(sys.argv[1])"]
            + [metadata.render_as_string(hide_password=False)],
            env,
        )
        assert probe.returncode != 0, "Airflow's database is reachable from the other host"
        for name in ("worker-1", "worker-2"):
            local.supervisor.stop(name)  # gracefully: the remote worker gets every line
        airflow = str(Path(sys.executable).parent / "airflow")
        worker = host.spawn(
            [airflow, "celery", "worker", "--celery-hostname", "remote-1@%h"]
            + ["--concurrency", str(SLOTS_PER_WORKER), "--skip-serve-logs"],
            env,
            tmp_path / "remote-worker.log",
        )
        try:
            doc = sample_order(f"REMOTE-{uuid.uuid4().hex[:10]}", 4)
            stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
            assert_completed_once(stack, doc)
            assert {worker_of(ti) for ti in ship_items(stack, doc)} == {"remote-1"}
            # Nothing was kept in a database there either: Airflow's settings leave an empty
            # SQLite file at most (its default URL, opened at start), with no table in it.
            local_db = home / "airflow.db"
            if local_db.exists():
                with contextlib.closing(sqlite3.connect(local_db)) as db:
                    assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            for forward in forwards.values():
                forward.close()
            local.up()  # worker-1 and worker-2 again


def test_no_worker_or_task_sees_the_admin_password_admin_token_or_jwt_secret(
    stack: LiveStack,
) -> None:
    """Celery workers and their task processes hold neither the admin password, the
    warehouse admin token, the JWT secret nor the metadata database, and still run tasks."""
    local = Stack(env=stack.env, echo=lambda _: None)
    jwt = environment.airflow_env(local, stack.state)["AIRFLOW__API_AUTH__JWT_SECRET"]
    secrets = (stack.state.admin_password, stack.state.warehouse_admin_token, jwt)
    seen = environments_during_an_order(stack)
    assert {"task", "worker-1", "worker-2"} <= set(seen)
    for name in ("task", "worker-1", "worker-2"):
        for environ in seen[name]:
            assert not [secret for secret in secrets if secret in environ], name
            assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in environ, name


def test_a_refused_line_asks_for_a_decision_that_a_worker_ships_once_answered(
    stack: LiveStack,
) -> None:
    """Celery mode: the decision waits holding no worker slot and no pool slot; the answer
    resumes it on a worker, which ships the fixed line; the order finalizes by itself."""
    from tests.e2e.test_decisions import FIX, line_shipments, refused_order

    doc, _ = refused_order(stack, "HCL")
    order_id, run_id = doc["order_id"], run_id_for(doc["order_id"])
    pool = stack.api._json("GET", "/pools/warehouse")
    assert (pool["occupied_slots"], pool["open_slots"]) == (0, pool["slots"])
    busy = stack.api._json(
        "GET", "/dags/~/dagRuns/~/taskInstances", params=[("state", "running"), ("state", "queued")]
    )
    assert busy["total_entries"] == 0
    answered = stack.api.answer_hitl(
        DAG_ID,
        run_id,
        "decide_line",
        1,
        chosen_options=[FIX],
        params_input={"sku": "MUG-BLUE", "quantity": 2, "reason": "renamed"},
    )
    assert answered.status_code == 200, answered.text
    assert stack.api.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)["state"] == "success"
    [decided] = [
        ti
        for ti in stack.api.task_instances(DAG_ID, run_id)
        if ti["task_id"] == "decide_line" and ti["map_index"] == 1
    ]
    assert (decided["state"], worker_of(decided)[:7]) == ("success", "worker-")
    assert stack.status(order_id)["state"] == "SHIPPED"
    [shipment] = line_shipments(stack, doc, "2")
    assert (shipment["sku"], shipment["quantity"]) == ("MUG-BLUE", 2)
