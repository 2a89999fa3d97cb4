"""The real local stack for end-to-end tests, started once per session.

The stack is the one ``make up`` starts (PostgreSQL, the warehouse, Airflow's
api-server, scheduler, dag-processor and triggerer), in a temporary folder, on free
ports, with its databases under a unique prefix on the session's PostgreSQL server, so
it never meets a developer's own stack. Tests talk to it only through public
interfaces: Airflow's REST API, the warehouse's HTTP API and the ``shipping`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from shipping.contract import (
    AIRFLOW_ADMIN_USER,
    AIRFLOW_DATABASE,
    LEDGER_DATABASE,
    WAREHOUSE_DATABASE,
)
from shipping.ops import localpg
from shipping.ops.airflow_api import AirflowClient
from shipping.ops.bench import prepare_dags_folder
from shipping.ops.stack import Stack
from shipping.ops.state import StackState
from shipping.warehouse import WarehouseAdmin, WarehouseClient
from tests.e2e.ui import VIEWPORT, AirflowUI, ChromiumMissing, find_chromium, launch_chromium

pytestmark = pytest.mark.e2e


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_airflow_port() -> int:
    """A port p with p, p+1, the scheduler's health check (p+894) and Redis (p+895) free.

    Tried in random order: a second test session on the machine (another checkout) must
    not take the ports this one's stack frees while a lifecycle test restarts it.
    """
    bases = list(range(18080, 19000, 10))
    random.shuffle(bases)
    for base in bases:
        if all(_free(p) for p in (base, base + 1, base + 894, base + 895)):
            return base
    raise RuntimeError("no free ports for the test stack")


@dataclass
class LiveStack:
    """Handles on the running test stack."""

    state: StackState
    env: dict[str, str]
    api: AirflowClient
    warehouse: WarehouseClient
    admin: WarehouseAdmin

    def shipping(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the ``shipping`` command against this stack, as a user would."""
        command = Path(sys.executable).parent / "shipping"
        return subprocess.run(
            [str(command), *args], env=self.env, capture_output=True, text=True, check=False
        )

    def status(self, order_id: str) -> dict[str, Any]:
        """``shipping status ORDER_ID --json``, parsed."""
        result = self.shipping("status", order_id, "--json")
        assert result.returncode == 0, result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc


@contextlib.contextmanager
def started_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str, **settings: str
) -> Iterator[LiveStack]:
    """A stack of its own (folder, ports, databases), up until the block ends."""
    port = _free_airflow_port()
    prefix = f"e2e_{uuid.uuid4().hex[:8]}_"
    env = {
        **os.environ,
        "SHIPPING_STACK_DIR": str(tmp_path_factory.mktemp("stack")),
        # order_intake and the benchmark's DAGs (tests/e2e/test_bench.py runs them tiny).
        "SHIPPING_DAGS_FOLDER": str(prepare_dags_folder(tmp_path_factory.mktemp("dags"))),
        "SHIPPING_POSTGRES_URL": postgres_server_url,
        "SHIPPING_DATABASE_PREFIX": prefix,
        "SHIPPING_AIRFLOW_PORT": str(port),
        "SHIPPING_WAREHOUSE_PORT": str(port + 1),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "WAREHOUSE_API_TOKEN": secrets.token_urlsafe(16),
        "WAREHOUSE_ADMIN_TOKEN": secrets.token_urlsafe(16),
        "SHIPPING_EXECUTOR": "local",
        **settings,
    }
    stack = Stack(env=env, echo=lambda _: None)
    state = stack.up()
    try:
        with (
            AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api,
            WarehouseClient(state.warehouse_url, state.warehouse_api_token) as warehouse,
        ):
            admin = WarehouseAdmin(state.warehouse_url, state.warehouse_admin_token)
            yield LiveStack(state, env, api, warehouse, admin)
    finally:
        stack.down(quiet=True)
        for name in (AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE):
            localpg.drop_database(postgres_server_url, prefix + name)
            localpg.drop_role(postgres_server_url, prefix + name)  # each database's own


@pytest.fixture(scope="session")
def live_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str
) -> Iterator[LiveStack]:
    """The whole system, up and healthy, for the session."""
    with started_stack(tmp_path_factory, postgres_server_url) as stack:
        yield stack


@pytest.fixture
def stack(live_stack: LiveStack) -> Iterator[LiveStack]:
    """The session's stack, with the warehouse's faults reset after each test."""
    yield live_stack
    live_stack.admin.reset_faults()


# === the browser ========================================================================
# One Chromium for the session (the system's, driven by Playwright); each test gets a
# fresh browser context, logged in to the session's stack. No Chromium is a failure of
# every browser test, never a skip: see tests/e2e/ui.py.


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """The system's Chromium, headless, for the session."""
    try:
        executable = find_chromium()
    except ChromiumMissing as missing:
        reason = str(missing)
    else:
        reason = ""
    if reason:  # outside the except block: the report shows the reason once, plainly
        pytest.fail(reason, pytrace=False)
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright, executable)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """When a browser test fails, save the page as it was and name the file in the report."""
    report: pytest.TestReport = yield
    page = getattr(item, "funcargs", {}).get("ui")
    if report.when == "call" and report.failed and isinstance(page, AirflowUI):
        shot = page.screenshot_to(item.funcargs["tmp_path"] / "failure.png")
        report.sections.append(("browser", f"the page when the test failed: {shot}"))
    return report


@pytest.fixture
def ui(browser: Browser, live_stack: LiveStack, tmp_path: Path) -> Iterator[AirflowUI]:
    """Airflow's UI in a fresh browser context, signed in as the stack's admin."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = AirflowUI(context.new_page(), live_stack.state.airflow_url)
        page.login(AIRFLOW_ADMIN_USER, live_stack.state.admin_password)
        yield page
    finally:
        context.close()
