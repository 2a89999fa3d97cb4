"""Each service's environment: Airflow's settings, the warehouse's, the workers'.

Written for the exec wrapper of :mod:`shipping.ops.supervision` as one JSON file per
service in supervisord's run folder (0600).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from shipping.connections import TOKEN_VAR, TOKENS_VAR, ledger_connection
from shipping.contract import (
    AIRFLOW_ADMIN_USER,
    AIRFLOW_DATABASE,
    LEDGER_CONN_ID,
    WAREHOUSE_DATABASE,
)
from shipping.ops import airflow_tuning
from shipping.ops.executor import WORKER_NAME_VAR, ExecutorSettings
from shipping.ops.stack import credentials
from shipping.ops.stack.common import HOST, set_or_drop
from shipping.ops.state import PROJECT_ROOT, StackState, write_private

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack

#: Airflow settings for fast recovery (read in the 3.3.2 source). A task's supervisor
#: heartbeats every 5 s (``[workers] min_heartbeat_interval``); after 30 s without one the
#: scheduler (checking every 5 s) fails the instance and Airflow retries it, instead of
#: after the default 300 s. Task instances queued or running under a scheduler that died
#: are reset for a new try after at most 30 s more (``orphaned_tasks_check_interval``,
#: default 300 s; a scheduler counts as dead 30 s after its last heartbeat,
#: ``scheduler_health_check_threshold``).
RECOVERY_SETTINGS: Mapping[str, str] = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
}


#: What a Celery worker is not given: Airflow's metadata database (workers talk to the API
#: server's Execution API instead, and could run on a machine that cannot reach it).
WORKER_WITHHELD = frozenset({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"})


def worker_env(airflow_env: Mapping[str, str]) -> dict[str, str]:
    """A Celery worker's environment: the Airflow components' minus what it must not have."""
    return {k: v for k, v in airflow_env.items() if k not in WORKER_WITHHELD}


def celery_settings(broker_url: str, concurrency: int) -> dict[str, str]:
    """Airflow's settings for the CeleryExecutor with a Redis broker (every component).

    Redis is the broker and the result backend: a worker then needs the broker and the
    API server, never Airflow's database (Airflow's default result backend is that
    database). Celery acknowledges a task when it ends (Airflow's default), so a task
    whose worker died is not lost; its instance is failed by the heartbeat timeout and
    retried (RECOVERY_SETTINGS).

    A broker restart (measured: Redis back 1.5 s after kill -9): sending a task waits up
    to 5 s for the broker instead of Airflow's 1 s, so a restart does not fail it. Airflow
    3.3.2's scheduler still exits when the result backend is unreachable while it polls
    (supervisord starts it again within seconds); a task it was sending at that moment can
    be left queued with no message, and is sent again after 300 s in the queued state
    (Airflow's default is 600 s). A task waits in the queue at most for the workers' slots
    to take the ``parallelism`` (64) queued before it: under 3 minutes on the loaded 2-core
    machine the benchmark ran on (0.4 lines/s); a slower cluster must raise it.
    """
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": broker_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "5",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "shipping.ops.executor.hostname",
    }


def write_env_files(stack: Stack, state: StackState, executor: ExecutorSettings) -> None:
    """Each service's environment beyond supervisord's own, for the exec wrapper (0600)."""
    base = base_env(stack)
    run = stack.supervisor.run_dir
    airflow = airflow_env(stack, state)
    envs = {"warehouse": warehouse_env(stack, state), "airflow": airflow}
    for name in executor.worker_names():
        envs[name] = worker_env(airflow) | {WORKER_NAME_VAR: name}
    for name, env in envs.items():
        extra: dict[str, str | None] = {k: v for k, v in env.items() if base.get(k) != v}
        # The token variables are always written: a value equal to this shell's must
        # still override what supervisord's own environment (an earlier shell) holds.
        extra |= {k: env.get(k) for k in (TOKEN_VAR, TOKENS_VAR)}
        # What supervisord's own environment holds but this service must not see.
        extra |= dict.fromkeys(base.keys() - env.keys())
        write_private(run / f"{name}.env.json", json.dumps(extra, indent=2))


def base_env(stack: Stack) -> dict[str, str]:
    """The environment every service starts from: the caller's, with the venv on PATH."""
    env = dict(stack.env)
    # Airflow starts its components as subprocesses named `airflow`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def warehouse_env(stack: Stack, state: StackState) -> dict[str, str]:
    """The warehouse service's environment: its database and its tokens."""
    env = base_env(stack)
    # As its own role; a state file of an older stack has none.
    env["WAREHOUSE_DATABASE_URL"] = state.warehouse_database_url or (
        make_url(state.postgres_url)
        .set(database=stack.db_prefix + WAREHOUSE_DATABASE)
        .render_as_string(hide_password=False)
    )
    for name, value in credentials.tokens_of(stack, state).warehouse_env().items():
        set_or_drop(env, name, value)
    return env


def airflow_env(stack: Stack, state: StackState) -> dict[str, str]:
    """The Airflow components' environment (writes the files it names: passwords, JWT secret)."""
    home = stack.dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    write_private(passwords, json.dumps({AIRFLOW_ADMIN_USER: state.admin_password}))
    secrets_file = home / "secrets.json"
    if not secrets_file.exists():
        write_private(secrets_file, json.dumps({"jwt": secrets.token_urlsafe(32)}))
    jwt_secret = json.loads(secrets_file.read_text())["jwt"]
    metadata = make_url(
        state.airflow_database_url
        or make_url(state.postgres_url).set(database=stack.db_prefix + AIRFLOW_DATABASE)
    )
    env = base_env(stack)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": (
                "CeleryExecutor" if state.executor == "celery" else "LocalExecutor"
            ),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{state.airflow_url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.render_as_string(hide_password=False),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(stack.ports.airflow),
            "AIRFLOW__API__BASE_URL": state.airflow_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            # Task logs: the UI reads them from this folder (no log server, see Ports).
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(stack.logs / "airflow"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                stack.ports.scheduler_health
            ),
            **RECOVERY_SETTINGS,
            f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(
                ledger_connection(state.ledger_url)
            ),
        }
    )
    for name, value in (
        credentials.tokens_of(stack, state).pipeline_env(state.warehouse_url).items()
    ):
        set_or_drop(env, name, value)
    if state.executor == "celery":
        env.update(celery_settings(state.broker_url, state.celery_concurrency))
    env.update(airflow_tuning.airflow_env(stack.env, celery=state.executor == "celery"))
    airflow_tuning.write_local_settings(home, stack.env)
    return env
