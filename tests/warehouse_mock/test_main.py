"""Tests for ``python -m warehouse_mock``: it starts, says so, and refuses bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.warehouse_mock.support import WarehouseProcess, make_b80d08c_database
from warehouse_mock.service import legacy_token_scope


def test_module_serves_and_logs_a_ready_line(tmp_path: Path) -> None:
    """The module runs the service on the given port and logs when it is ready."""
    process = WarehouseProcess(
        {"WAREHOUSE_API_TOKEN": "client-token-main", "WAREHOUSE_ADMIN_TOKEN": "admin-token-main"},
        tmp_path,
        "main",
    )
    try:
        process.wait_ready()
        assert requests.get(f"{process.base_url}/openapi.json", timeout=5).status_code == 200
        assert f"warehouse_mock ready on {process.base_url}" in process.log()
        assert (tmp_path / "warehouse.db").exists()  # the default database, in the current dir
    finally:
        process.stop()


def test_module_exits_naming_the_variable_when_settings_are_invalid(tmp_path: Path) -> None:
    """Bad settings stop the process at once with exit code 2 and the variable's name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAREHOUSE_")} | {
        "WAREHOUSE_API_TOKEN": "client-token-main",
        "WAREHOUSE_ADMIN_TOKEN": "changeme",
    }
    result = subprocess.run(
        [sys.executable, "-m", "warehouse_mock", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "WAREHOUSE_ADMIN_TOKEN" in result.stderr


def test_module_refuses_to_start_over_rows_of_an_unknown_retired_token(tmp_path: Path) -> None:
    """Rows under the per-token scope of a token no longer configured stop the start (exit 3),
    and the log names the setting that fixes it."""
    legacy_scope = legacy_token_scope("retired-token-main")
    make_b80d08c_database(f"sqlite:///{tmp_path / 'warehouse.db'}", legacy_scope)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAREHOUSE_")} | {
        "WAREHOUSE_API_TOKEN": "client-token-main",
        "WAREHOUSE_ADMIN_TOKEN": "admin-token-main",
    }
    result = subprocess.run(
        [sys.executable, "-m", "warehouse_mock", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "WAREHOUSE_RETIRED_TOKENS" in result.stderr
    assert legacy_scope[:12] in result.stderr
