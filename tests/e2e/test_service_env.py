"""No process of the running stack but the warehouse sees the admin password or admin token.

Read from each process's environment block (/proc/PID/environ) while an order's task
processes run: supervisord, every service with its children (the LocalExecutor's workers
and the task processes they fork from the scheduler), and the task processes themselves.
"""

from __future__ import annotations

from tests.e2e.conftest import LiveStack
from tests.e2e.support import environments_during_an_order


def test_no_task_or_airflow_process_sees_the_admin_password_or_admin_token(
    stack: LiveStack,
) -> None:
    """Tasks, Airflow's components and supervisord hold neither secret, under any name;
    the warehouse holds its admin token but not the admin password."""
    password, token = stack.state.admin_password, stack.state.warehouse_admin_token
    assert password
    assert token
    seen = environments_during_an_order(stack)
    assert {"task", "scheduler", "api-server", "warehouse", "supervisord"} <= set(seen)
    for name, environs in seen.items():
        for environ in environs:
            assert password not in environ, name
            assert "AIRFLOW_ADMIN_PASSWORD" not in environ, name
            if name != "warehouse":
                assert token not in environ, name
                assert "WAREHOUSE_ADMIN_TOKEN" not in environ, name
    assert any(token in environ for environ in seen["warehouse"])
