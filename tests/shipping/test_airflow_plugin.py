"""The ledger view's Airflow wiring: found by Airflow's plugin manager, light, guarded.

Each check runs in a fresh interpreter (Airflow reads its configuration once, at import,
and what a process imports is the point).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_python(code: str, tmp_path: Path) -> str:
    """Run ``code`` in a fresh interpreter with a throw-away AIRFLOW_HOME; its stdout."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_domain_imports_without_airflow(tmp_path: Path) -> None:
    """Every module of shipping but the plugin's wiring imports without Airflow."""
    code = """
import pkgutil, importlib, sys
import shipping
for mod in pkgutil.walk_packages(shipping.__path__, "shipping."):
    # __main__ modules run their command when imported: what they import is imported here.
    if mod.name != "shipping.airflow_plugin" and not mod.name.endswith(".__main__"):
        importlib.import_module(mod.name)
print(sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow.")))
"""
    assert run_python(code, tmp_path).strip() == "[]"


def test_airflow_loads_the_plugin_from_its_entry_point_with_its_views(tmp_path: Path) -> None:
    """The plugin manager finds it; a dag_run, a task_instance and a nav view point at the app."""
    code = """
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
assert not errors, errors
[plugin] = [p for p in plugins if p.name == "shipping_ledger"]
for view in plugin.external_views:
    print(view["destination"], view["href"])
[app] = plugin.fastapi_apps
print("app", app["url_prefix"])
"""
    out = run_python(code, tmp_path).splitlines()
    assert out == [
        "dag_run /shipping-ledger/runs/{DAG_ID}/{RUN_ID}",
        "task_instance /shipping-ledger/runs/{DAG_ID}/{RUN_ID}/lines/{MAP_INDEX}",
        "nav /shipping-ledger/open",
        "app /shipping-ledger",
    ]


def test_loading_the_plugin_imports_no_web_framework(tmp_path: Path) -> None:
    """Task processes load plugins too: the plugin costs them no FastAPI, no API server."""
    code = """
import sys
import shipping.airflow_plugin
print(sorted(m for m in ("fastapi", "shipping.ui.app", "airflow.api_fastapi.core_api.security")
             if m in sys.modules))
"""
    assert run_python(code, tmp_path).strip() == "[]"


def test_the_plugins_app_refuses_a_request_without_airflow_credentials(tmp_path: Path) -> None:
    """Airflow's own get_user guards every route: no token, no cookie: 401; a forged one: 403."""
    code = """
from airflow.api_fastapi.app import create_auth_manager
from fastapi.testclient import TestClient
from shipping.airflow_plugin import ledger_app
create_auth_manager()  # the API server's, as it has one (the simple auth manager)
with TestClient(ledger_app()) as http:
    for path in ("/open", "/api/open", "/api/orders/X", "/runs/order_intake/r"):
        print("status", path, http.get(path).status_code)
        print("status", path, http.get(path, cookies={"_token": "forged"}).status_code)
"""
    out = run_python(code, tmp_path).splitlines()
    assert [line for line in out if line.startswith("status ")] == [
        f"status {path} {code}"
        for path in ("/open", "/api/open", "/api/orders/X", "/runs/order_intake/r")
        for code in (401, 403)
    ]
