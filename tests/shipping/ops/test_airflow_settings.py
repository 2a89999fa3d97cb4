"""Airflow's settings come from one function, for the local stack and for compose."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shipping.ops import airflow_settings
from shipping.ops.airflow_settings import COMPOSE_SITE, Site, compose_settings
from shipping.ops.executor import ExecutorSettings
from shipping.ops.stack import Stack, environment
from shipping.ops.state import StackState


def test_the_checked_in_compose_env_files_are_fresh() -> None:
    """docker/airflow.env and docker/airflow-worker.env are what the function writes now
    (stale: run `make compose-env`)."""
    for path, text in airflow_settings.compose_env_files().items():
        assert path.read_text() == text, f"{path} is stale: run make compose-env"


def test_check_mode_reports_a_stale_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--check` exits 1 on a stale file and writes nothing; without it the file is rewritten."""
    stale = tmp_path / "airflow.env"
    stale.write_text("AIRFLOW__CORE__EXECUTOR=SequentialExecutor\n")
    monkeypatch.setattr(airflow_settings, "COMPOSE_ENV_FILES", {"components": stale})
    monkeypatch.setattr(
        airflow_settings,
        "compose_env_files",
        lambda: {stale: "AIRFLOW__CORE__EXECUTOR=CeleryExecutor\n"},
    )
    assert airflow_settings.main(["--check"]) == 1
    assert "Sequential" in stale.read_text()
    assert airflow_settings.main([]) == 0
    assert airflow_settings.main(["--check"]) == 0


def _site_keys() -> set[str]:
    """The settings a Site decides (they differ between two sites that differ in every field)."""
    other = Site("/x/dags", "/x/logs", "/x/pw.json", "http://x:1/execution/", 1)
    a = airflow_settings.airflow_settings(COMPOSE_SITE, celery=True, parallelism=64)
    b = airflow_settings.airflow_settings(other, celery=True, parallelism=64)
    assert len({f.name for f in dataclasses.fields(Site)}) == 5
    return {key for key in a if a[key] != b[key]}


def test_the_local_stack_in_celery_mode_has_composes_settings_but_its_site(
    tmp_path: Path,
) -> None:
    """Every setting compose's env file holds, the stack's components have with the same
    value, but those its site (paths, addresses, ports) decides."""
    env = {"SHIPPING_EXECUTOR": "celery", "PATH": "/usr/bin"}
    stack = Stack(directory=tmp_path, env=env, echo=lambda _: None)
    executor = ExecutorSettings.from_env(env)
    state = StackState(
        airflow_url="http://127.0.0.1:8080",
        warehouse_url="http://127.0.0.1:8081",
        admin_password="pw-of-the-test-1",
        warehouse_api_token="client-token",
        warehouse_admin_token="admin-token",
        ledger_url="postgresql+psycopg2://u:pw@db/shipping_ledger",
        postgres_url="postgresql+psycopg2://u:pw@db/postgres",
        embedded_postgres=False,
        executor="celery",
        celery_workers=executor.workers,
        celery_concurrency=executor.concurrency,
        broker_url="redis://:pw@127.0.0.1:8975",
        embedded_redis=True,
    )
    local = environment.airflow_env(stack, state)
    site = _site_keys()
    assert site == {
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    }
    compose = compose_settings()
    assert {k: v for k, v in compose.items() if k not in site} == {
        k: local[k] for k in compose if k not in site
    }
    assert local["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_the_local_executor_differs_from_celery_only_in_the_executors_settings() -> None:
    """LocalExecutor mode: the same settings but the executor, Celery's and the parallelism."""
    local = airflow_settings.airflow_settings(COMPOSE_SITE, celery=False, parallelism=8)
    celery = airflow_settings.airflow_settings(COMPOSE_SITE, celery=True, parallelism=64)
    assert local["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    differ = {k for k in celery if local.get(k) != celery[k]}
    assert differ == {
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__PARALLELISM",
        *airflow_settings.celery_settings(4),
    }
