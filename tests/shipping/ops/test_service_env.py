"""Each service of the local stack gets an environment built from an allowlist."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from shipping.ops.airflow_settings import WORKER_SETTINGS
from shipping.ops.executor import ExecutorSettings
from shipping.ops.stack import Stack, environment
from shipping.ops.state import StackState

ADMIN_PASSWORD = "admin-password-of-the-caller-1"
ADMIN_TOKEN = "warehouse-admin-token-of-the-caller-1"
#: What a developer's shell may hold beside the stack's settings.
CALLER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/dev",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/proxy.pem",
    "AIRFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "WAREHOUSE_ADMIN_TOKEN": ADMIN_TOKEN,
    "WAREHOUSE_API_TOKEN": "client-token-of-the-caller",
    "WAREHOUSE_FAULTS": '{"error_rate": 0.1}',
    "AWS_SECRET_ACCESS_KEY": "unrelated-cloud-secret",
    "SHIPPING_POSTGRES_URL": "postgresql://u:pgpass@db/postgres",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
}
OS_KEYS = {*environment.OS_VARIABLES, "PYTHONUNBUFFERED"}


def _state(celery: bool) -> StackState:
    return StackState(
        airflow_url="http://127.0.0.1:8080",
        warehouse_url="http://127.0.0.1:8081",
        admin_password=ADMIN_PASSWORD,
        warehouse_api_token="client-token-of-the-caller",
        warehouse_admin_token=ADMIN_TOKEN,
        ledger_url="postgresql+psycopg2://u:pw@db/shipping_ledger",
        postgres_url="postgresql+psycopg2://u:pw@db/postgres",
        embedded_postgres=False,
        executor="celery" if celery else "local",
        celery_workers=2 if celery else 0,
        celery_concurrency=4 if celery else 0,
        broker_url="redis://:redispw@127.0.0.1:8975" if celery else "",
        embedded_redis=celery,
    )


def _envs(tmp_path: Path, *, celery: bool) -> dict[str, dict[str, Any]]:
    """Each service's environment as the exec wrapper gives it (supervisord's: "supervisord")."""
    settings = {**CALLER, "SHIPPING_EXECUTOR": "celery" if celery else "local"}
    stack = Stack(directory=tmp_path, env=settings, echo=lambda _: None)
    executor = ExecutorSettings.from_env(settings)
    environment.write_env_files(stack, _state(celery), executor)
    envs = {
        path.name.removesuffix(".env.json"): json.loads(path.read_text())
        for path in stack.supervisor.run_dir.glob("*.env.json")
    }
    envs["supervisord"] = environment.base_env(stack)
    return envs


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


@pytest.fixture(params=[False, True], ids=["local", "celery"])
def envs(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, dict[str, Any]]:
    return _envs(tmp_path, celery=request.param)


def test_supervisord_and_the_databases_get_only_operating_system_variables(
    envs: dict[str, dict[str, Any]],
) -> None:
    """supervisord (PostgreSQL and Redis run with its environment) sees the OS part alone."""
    keys = set(envs["supervisord"])
    assert keys - OS_KEYS <= {k for k in keys if k.startswith("LC_")}
    assert envs["supervisord"]["SSL_CERT_FILE"] == "/etc/ssl/proxy.pem"


def test_no_airflow_service_or_worker_sees_the_admin_password_or_the_admin_token(
    envs: dict[str, dict[str, Any]],
) -> None:
    """Airflow's components (LocalExecutor tasks fork from the scheduler) and the workers
    get neither the admin password nor the warehouse admin token, under any name."""
    airflow = {name: env for name, env in envs.items() if name != "warehouse"}
    assert "airflow" in airflow
    for name, env in airflow.items():
        text = json.dumps(env)
        assert ADMIN_PASSWORD not in text, name
        assert ADMIN_TOKEN not in text, name
        assert "AIRFLOW_ADMIN_PASSWORD" not in env, name
        assert "WAREHOUSE_ADMIN_TOKEN" not in env, name


def test_the_warehouse_gets_its_settings_and_tokens_but_not_the_admin_password(
    envs: dict[str, dict[str, Any]],
) -> None:
    """The warehouse: OS variables and WAREHOUSE_* (its admin token too), nothing else."""
    warehouse = envs["warehouse"]
    assert {k for k in warehouse if k not in OS_KEYS} <= {
        k for k in warehouse if k.startswith(("WAREHOUSE_", "LC_"))
    }
    assert warehouse["WAREHOUSE_ADMIN_TOKEN"] == ADMIN_TOKEN
    assert warehouse["WAREHOUSE_FAULTS"] == CALLER["WAREHOUSE_FAULTS"]
    assert warehouse["WAREHOUSE_DATABASE_URL"].endswith("/warehouse")
    assert ADMIN_PASSWORD not in json.dumps(warehouse)


def test_airflow_components_get_only_os_and_airflow_variables(
    envs: dict[str, dict[str, Any]],
) -> None:
    """The components' environment: OS variables, Airflow's namespaces, the client token."""
    airflow = envs["airflow"]
    allowed = ("AIRFLOW_HOME", "AIRFLOW__*", "AIRFLOW_CONN_*", "AIRFLOW_VAR_*", "LC_*")
    extra = {k for k in airflow if k not in OS_KEYS and not _matches(k, allowed)}
    assert extra == {"WAREHOUSE_API_TOKEN"}
    assert airflow["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "DEBUG"  # Airflow's own namespace
    assert airflow["AIRFLOW__API_AUTH__JWT_SECRET"]


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "SHIPPING_POSTGRES_URL"])
def test_no_service_gets_a_variable_off_its_allowlist(
    envs: dict[str, dict[str, Any]], variable: str
) -> None:
    """A variable of the caller's no allowlist names reaches no service."""
    for name, env in envs.items():
        assert variable not in env, name
        assert CALLER[variable] not in json.dumps(env), name


def test_a_worker_gets_the_execution_api_but_no_jwt_secret_database_or_fernet_key(
    tmp_path: Path,
) -> None:
    """A Celery worker's environment: its allowlist, its name; no signing secret."""
    envs = _envs(tmp_path, celery=True)
    for name in ("worker-1", "worker-2"):
        worker = envs[name]
        airflow_keys = {k for k in worker if k not in OS_KEYS and not k.startswith("LC_")}
        assert {k for k in airflow_keys if not _matches(k, WORKER_SETTINGS)} == {
            "SHIPPING_WORKER_NAME"
        }
        assert worker["SHIPPING_WORKER_NAME"] == name
        assert worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
        assert worker["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert {"AIRFLOW_CONN_WAREHOUSE_API", "AIRFLOW_CONN_SHIPPING_LEDGER"} <= set(worker)
        for withheld in (
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        ):
            assert withheld not in worker, (name, withheld)
        assert envs["airflow"]["AIRFLOW__API_AUTH__JWT_SECRET"] not in json.dumps(worker)
