"""Airflow's settings, one source for the local stack and docker compose.

:func:`airflow_settings` makes every ``AIRFLOW__*`` setting that is not a secret and not a
credential-bearing URL, for a :class:`Site`: the local stack builds its site from its folder
and ports (LocalExecutor or Celery mode), compose's is :data:`COMPOSE_SITE`. Compose reads
its copy from ``docker/airflow.env`` and ``docker/airflow-worker.env`` (``env_file:``),
which ``make compose-env`` (``python -m shipping.ops.airflow_settings``) writes; a test
fails when a checked-in file is stale. The secrets (JWT secret, Fernet key, the API's secret key) and
the URLs that carry a password (metadata database, broker, connections) are not here: the
local stack generates them, compose interpolates them from ``.env``.

Which service gets which setting is an allowlist too: :data:`WORKER_SETTINGS` names what a
Celery worker gets; every other Airflow component gets them all. A worker runs task
processes that carry the token the scheduler signed for each task (its workload), so it
needs the Execution API's URL but not the JWT secret that signs tokens (read in the 3.3.2
source: only the executor, in the scheduler, and the API server use
``[api_auth] jwt_secret``), nor the metadata database, the Fernet key, or the admin password
file. Its log server (compose) validates the API server's requests with ``[api] secret_key``.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shipping.contract import AIRFLOW_ADMIN_USER, AIRFLOW_PORT
from shipping.ops.airflow_tuning import CELERY_PARALLELISM
from shipping.ops.executor import DEFAULT_CONCURRENCY

_DOCKER: Final = Path(__file__).resolve().parents[2] / "docker"
#: Compose's copy of :func:`airflow_settings` (``env_file:`` of every Airflow component), and
#: the Celery workers' part of it (:func:`for_worker`).
COMPOSE_ENV_FILES: Final = {
    "components": _DOCKER / "airflow.env",
    "worker": _DOCKER / "airflow-worker.env",
}

#: Fast recovery (read in the 3.3.2 source). A task's supervisor heartbeats every 5 s
#: (``[workers] min_heartbeat_interval``); after 30 s without one the scheduler (checking
#: every 5 s) fails the instance and Airflow retries it, instead of after the default 300 s.
#: Task instances queued or running under a scheduler that died are reset for a new try
#: after at most 30 s more (``orphaned_tasks_check_interval``, default 300 s; a scheduler
#: counts as dead 30 s after its last heartbeat, ``scheduler_health_check_threshold``).
RECOVERY_SETTINGS: Final[Mapping[str, str]] = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
}

#: What a Celery worker gets of the Airflow components' settings (patterns). Everything
#: else (the metadata database, the JWT secret, the Fernet key, the scheduler's and the API
#: server's own settings, the admin password file) stays with the components that use it.
WORKER_SETTINGS: Final = (
    "AIRFLOW_HOME",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__LOGGING__*",
    "AIRFLOW__CELERY__*",
    # The worker's log server (compose) checks the API server's log requests with it.
    "AIRFLOW__API__SECRET_KEY",
    # The tasks' connections (the warehouse's client token, the ledger).
    "AIRFLOW_CONN_*",
)


@dataclass(frozen=True)
class Site:
    """Where Airflow runs: the paths and addresses that differ between the stack and compose.

    Attributes:
        dags_folder: The DAG folder (the project's ``dags/``, or the image's copy).
        log_folder: Task logs, shared by every component (the UI reads them there).
        passwords_file: The simple auth manager's password file (written at start).
        execution_api_url: Where task processes reach the Execution API.
        health_check_port: The scheduler's health check server (on 127.0.0.1).
    """

    dags_folder: str
    log_folder: str
    passwords_file: str
    execution_api_url: str
    health_check_port: int


#: The compose services' site (paths in the image and on its volumes, service names).
COMPOSE_SITE: Final = Site(
    dags_folder="/opt/airflow/dags",
    log_folder="/opt/airflow/logs",
    passwords_file="/opt/airflow/auth/simple_auth_manager_passwords.json",
    execution_api_url=f"http://airflow-apiserver:{AIRFLOW_PORT}/execution/",
    health_check_port=8974,
)


def airflow_settings(
    site: Site, *, celery: bool, parallelism: int | None, concurrency: int = DEFAULT_CONCURRENCY
) -> dict[str, str]:
    """Every Airflow setting that is neither a secret nor a URL holding one.

    Args:
        site: Where Airflow runs.
        celery: The CeleryExecutor (else the LocalExecutor).
        parallelism: ``[core] parallelism``, or None for Airflow's default
            (:mod:`shipping.ops.airflow_tuning` chooses it).
        concurrency: Task slots per Celery worker.
    """
    settings = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if celery else "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # order_intake runs as soon as it is parsed: orders are posted to it over REST.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": site.dags_folder,
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": site.log_folder,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Airflow 3's default, named so that both sites say which one they use.
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": site.passwords_file,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": site.execution_api_url,
        # The scheduler's health check server, on loopback only (it binds every interface
        # unless told otherwise).
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(site.health_check_port),
        **RECOVERY_SETTINGS,
    }
    if parallelism is not None:
        settings["AIRFLOW__CORE__PARALLELISM"] = str(parallelism)
    if celery:
        settings |= celery_settings(concurrency)
    return settings


def celery_settings(concurrency: int) -> dict[str, str]:
    """The CeleryExecutor's settings but the broker's URL (which holds its password).

    Redis is the broker and the result backend (the URLs are the site's): a worker then
    needs the broker and the API server, never Airflow's database (Airflow's default
    result backend is that database). Celery acknowledges a task when it ends (Airflow's
    default), so a task whose worker died is not lost; its instance is failed by the
    heartbeat timeout and retried (:data:`RECOVERY_SETTINGS`).

    A broker restart (measured: Redis back 1.5 s after kill -9): sending a task waits up
    to 5 s for the broker instead of Airflow's 1 s, so a restart does not fail it. Airflow
    3.3.2's scheduler still exits when the result backend is unreachable while it polls
    (supervisord or compose starts it again within seconds); a task it was sending at that
    moment can be left queued with no message, and is sent again after 300 s in the queued
    state (Airflow's default is 600 s). A task waits in the queue at most for the workers'
    slots to take the ``parallelism`` (64) queued before it: under 3 minutes on the loaded
    2-core machine the benchmark ran on (0.4 lines/s); a slower cluster must raise it.
    """
    return {
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "5",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        # The host name a task instance records names its worker (SHIPPING_WORKER_NAME in
        # the local stack; the container's own host name in compose).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "shipping.ops.executor.hostname",
    }


def for_worker(env: Mapping[str, str]) -> dict[str, str]:
    """The part of an Airflow component's environment a Celery worker gets (its allowlist)."""
    return {
        key: value
        for key, value in env.items()
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in WORKER_SETTINGS)
    }


def compose_settings() -> dict[str, str]:
    """Compose's Airflow settings: Celery mode at the stack's defaults, on compose's site."""
    return airflow_settings(
        COMPOSE_SITE, celery=True, parallelism=CELERY_PARALLELISM, concurrency=DEFAULT_CONCURRENCY
    )


def compose_env_files() -> dict[Path, str]:
    """The text of compose's env files (:data:`COMPOSE_ENV_FILES`), by path."""
    settings = {"components": compose_settings(), "worker": for_worker(compose_settings())}
    texts = {}
    for role, path in COMPOSE_ENV_FILES.items():
        header = (
            f"# Airflow's settings for the {'Celery workers' if role == 'worker' else 'Airflow components'}"
            " of docker-compose.yaml (env_file).\n"
            "# Written by `make compose-env` (python -m shipping.ops.airflow_settings) from the\n"
            "# function the local stack uses too: edit shipping/ops/airflow_settings.py, not this.\n"
            "# Secrets and the URLs that hold them are in docker-compose.yaml, from .env.\n"
        )
        lines = [f"{key}={value}" for key, value in sorted(settings[role].items())]
        texts[path] = header + "\n".join(lines) + "\n"
    return texts


def main(argv: list[str] | None = None) -> int:
    """Write compose's env files (``--check``: exit 1 when one is stale instead)."""
    parser = argparse.ArgumentParser(
        prog="python -m shipping.ops.airflow_settings",
        description="Write compose's Airflow settings (docker/airflow*.env).",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in compose_env_files().items():
        if (path.read_text() if path.exists() else None) == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            sys.stdout.write(f"wrote {path}\n")
    if args.check and stale:
        sys.stderr.write(f"stale: {', '.join(map(str, stale))}; run make compose-env\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
