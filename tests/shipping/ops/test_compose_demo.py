"""The compose demo's driver, without an engine: what it needs, what it builds from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shipping.ops import compose_demo
from shipping.ops.compose_demo import DemoFailure


def test_without_docker_the_demo_fails_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No docker command: a DemoFailure that names the packages to install, never a pass."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DemoFailure, match=r"apt-get install -y docker\.io"):
        compose_demo.ensure_engine(start=False)


def test_the_build_context_carries_the_ca_bundle_only_when_given(tmp_path: Path) -> None:
    """build-ca.pem is in the demo's build context when SSL_CERT_FILE is set, else absent."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    with_ca, without = tmp_path / "with", tmp_path / "without"
    with_ca.mkdir()
    without.mkdir()
    compose_demo.build_context(with_ca, str(bundle))
    compose_demo.build_context(without, None)
    assert (with_ca / compose_demo.BUILD_CA).read_text() == bundle.read_text()
    assert not (without / compose_demo.BUILD_CA).exists()
    assert (without / "docker" / "entrypoint.sh").is_file()


def test_the_env_file_is_private_and_holds_fresh_secrets(tmp_path: Path) -> None:
    """The demo's env file is mode 0600 and its secrets differ from run to run."""
    first = compose_demo.make_stack(["docker-compose"], "p", {}, tmp_path)
    (tmp_path / "again").mkdir()
    second = compose_demo.make_stack(["docker-compose"], "p", {}, tmp_path / "again")
    assert first.env_file.stat().st_mode & 0o777 == 0o600
    assert first.env["AIRFLOW_ADMIN_PASSWORD"] != second.env["AIRFLOW_ADMIN_PASSWORD"]
    assert not any(value.startswith("change-me") for value in first.env.values())


def test_a_role_that_reaches_another_database_fails_the_demo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The roles phase runs the check in each named container and fails naming the one
    whose check refused."""
    stack = compose_demo.make_stack(["docker-compose"], "p", {}, tmp_path)
    calls: list[tuple[str, ...]] = []

    def run(*args: str, **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        refused = args[2] == "warehouse"
        return subprocess.CompletedProcess(
            list(args),
            1 if refused else 0,
            "" if refused else "ok",
            "refused: WAREHOUSE_DATABASE_URL: its role reaches airflow" if refused else "",
        )

    monkeypatch.setattr(stack, "run", run)
    with pytest.raises(DemoFailure, match=r"warehouse: refused: .*reaches airflow"):
        compose_demo.check_database_roles(stack)
    assert [call[2] for call in calls] == list(compose_demo.ROLE_CHECK_SERVICES)
    assert all(call[-3:] == ("-m", "shipping.ops.compose_databases", "--check") for call in calls)
