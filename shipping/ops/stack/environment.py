"""Each service's environment, built from an allowlist: nothing reaches a service by chance.

supervisord starts with :func:`os_env` alone: the caller's operating-system variables on
:data:`OS_VARIABLES` (locale, proxies, CA bundles, home), the project's venv on ``PATH``.
PostgreSQL and Redis run with that. The exec wrapper of :mod:`shipping.ops.supervision`
gives every other service exactly its environment file (0600, in supervisord's run
folder), which this module writes:

- the warehouse: :func:`os_env`, the caller's ``WAREHOUSE_*`` settings (its own prefix),
  its database and its tokens (the admin token included: it serves ``/_admin``);
- Airflow's components (api-server, scheduler, dag-processor, triggerer; the bootstrap
  commands too): :func:`os_env`, the caller's ``AIRFLOW__*``, ``AIRFLOW_CONN_*`` and
  ``AIRFLOW_VAR_*`` (Airflow's own namespaces, for deliberate overrides), then the
  settings of :func:`shipping.ops.airflow_settings.airflow_settings` (which win), the
  secrets and URLs of this stack and the pipeline's connections with the one client token;
- a Celery worker: :func:`os_env` and what
  :func:`shipping.ops.airflow_settings.for_worker` keeps of the components' environment
  (no metadata database, no JWT secret), plus its name.

So neither the admin password (``AIRFLOW_ADMIN_PASSWORD``: only the stack's own process
reads it, to write the API server's password file) nor the warehouse admin token reaches
Airflow, its workers or the task processes they start (LocalExecutor tasks are forked
from the scheduler and inherit its environment).
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy.engine import make_url

from shipping.connections import ledger_connection
from shipping.contract import (
    AIRFLOW_ADMIN_USER,
    AIRFLOW_DATABASE,
    LEDGER_CONN_ID,
    WAREHOUSE_DATABASE,
)
from shipping.ops import airflow_settings, airflow_tuning
from shipping.ops.airflow_settings import RECOVERY_SETTINGS as RECOVERY_SETTINGS
from shipping.ops.executor import DEFAULT_CONCURRENCY, WORKER_NAME_VAR, ExecutorSettings
from shipping.ops.stack import credentials
from shipping.ops.stack.common import HOST, set_or_drop
from shipping.ops.state import PROJECT_ROOT, StackState, write_private

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack

#: The caller's operating-system variables every service (and supervisord) gets, if set.
OS_VARIABLES: Final = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        # A TLS-intercepting proxy's CA bundle, and the proxies themselves.
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "PYTHONDONTWRITEBYTECODE",
    }
)
#: Patterns of further OS variables every service gets (the locale's categories).
OS_PATTERNS: Final = ("LC_*",)
#: The caller's variables the warehouse gets: its own settings.
WAREHOUSE_PATTERNS: Final = ("WAREHOUSE_*",)
#: The caller's variables Airflow's components get: Airflow's own namespaces.
AIRFLOW_PATTERNS: Final = ("AIRFLOW__*", "AIRFLOW_CONN_*", "AIRFLOW_VAR_*")


def _matching(env: Mapping[str, str], patterns: tuple[str, ...]) -> dict[str, str]:
    return {
        key: value
        for key, value in env.items()
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
    }


def os_env(caller: Mapping[str, str]) -> dict[str, str]:
    """What every service starts from: the caller's OS variables, the venv first on PATH."""
    env = {key: value for key, value in caller.items() if key in OS_VARIABLES}
    env |= _matching(caller, OS_PATTERNS)
    # Airflow starts its components as subprocesses named `airflow`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{caller.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def worker_env(airflow_env: Mapping[str, str]) -> dict[str, str]:
    """A Celery worker's environment: the OS part and the worker's allowlist of Airflow's."""
    return (
        {
            key: value
            for key, value in airflow_env.items()
            if key in OS_VARIABLES or key == "PYTHONUNBUFFERED"
        }
        | _matching(airflow_env, OS_PATTERNS)
        | airflow_settings.for_worker(airflow_env)
    )


def celery_settings(broker_url: str, concurrency: int) -> dict[str, str]:
    """Airflow's settings for the CeleryExecutor with this Redis broker (every component).

    The broker is also the result backend; the rest is
    :func:`shipping.ops.airflow_settings.celery_settings`.
    """
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": broker_url,
        **airflow_settings.celery_settings(concurrency),
    }


def write_env_files(stack: Stack, state: StackState, executor: ExecutorSettings) -> None:
    """Each service's whole environment, for the exec wrapper (0600)."""
    run = stack.supervisor.run_dir
    airflow = airflow_env(stack, state)
    envs = {"warehouse": warehouse_env(stack, state), "airflow": airflow}
    for name in executor.worker_names():
        envs[name] = worker_env(airflow) | {WORKER_NAME_VAR: name}
    for name, env in envs.items():
        write_private(run / f"{name}.env.json", json.dumps(env, indent=2, sort_keys=True))


def base_env(stack: Stack) -> dict[str, str]:
    """supervisord's environment, and what every service starts from (:func:`os_env`)."""
    return os_env(stack.env)


def warehouse_env(stack: Stack, state: StackState) -> dict[str, str]:
    """The warehouse service's environment: its settings, its database and its tokens."""
    env = base_env(stack) | _matching(stack.env, WAREHOUSE_PATTERNS)
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
    celery = state.executor == "celery"
    tuning = airflow_tuning.airflow_env(stack.env, celery=celery)
    site = airflow_settings.Site(
        dags_folder=tuning.get("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags")),
        # Task logs: the UI reads them from this folder (no log server, see Ports).
        log_folder=str(stack.logs / "airflow"),
        passwords_file=str(passwords),
        execution_api_url=f"{state.airflow_url}/execution/",
        health_check_port=stack.ports.scheduler_health,
    )
    parallelism = tuning.get("AIRFLOW__CORE__PARALLELISM")
    env = base_env(stack) | _matching(stack.env, AIRFLOW_PATTERNS)
    env |= airflow_settings.airflow_settings(
        site,
        celery=celery,
        parallelism=int(parallelism) if parallelism else None,
        concurrency=state.celery_concurrency or DEFAULT_CONCURRENCY,
    )
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.render_as_string(hide_password=False),
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(stack.ports.airflow),
        "AIRFLOW__API__BASE_URL": state.airflow_url,
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(ledger_connection(state.ledger_url)),
    }
    for name, value in (
        credentials.tokens_of(stack, state).pipeline_env(state.warehouse_url).items()
    ):
        set_or_drop(env, name, value)
    if celery:
        env |= {
            "AIRFLOW__CELERY__BROKER_URL": state.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": state.broker_url,
        }
    airflow_tuning.write_local_settings(home, stack.env)
    return env
