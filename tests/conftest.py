"""Fixtures shared by the whole suite: a real PostgreSQL server and a real warehouse.

PostgreSQL comes from ``SHIPPING_POSTGRES_URL`` when it is set; otherwise the suite starts
the embedded server of :mod:`shipping.ops.localpg` once per session, so a fresh laptop with
no database service runs the PostgreSQL tests too (they are never skipped).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipping.ops import localpg
from warehouse_mock.settings import Settings
from warehouse_mock.testing import WarehouseHandle, serve_warehouse


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server on which tests may create their own databases."""
    given = os.environ.get("SHIPPING_POSTGRES_URL")
    if given:
        yield given
        return
    # A short base path keeps the server's Unix socket under the OS path-length limit.
    pgdata = Path(tmp_path_factory.mktemp("pg")) / "data"
    yield localpg.start(pgdata, keep_running=True)
    localpg.stop(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = localpg.ensure_database(postgres_server_url, name)
    yield url
    localpg.drop_database(postgres_server_url, name)


# === warehouse mock =====================================================================
# A real warehouse server (uvicorn in a thread, SQLite file) shared by the whole session:
# the warehouse_mock tests and the client tests talk HTTP to it. ``warehouse`` resets its
# faults before and after each test; tests keep apart by using unique order ids and keys.

WAREHOUSE_TEST_API_TOKEN = "test-client-token-1f7c2a"
WAREHOUSE_TEST_ROTATED_API_TOKEN = "test-client-token-9b4e6d"
WAREHOUSE_TEST_FOREIGN_API_TOKEN = "test-foreign-token-5c0e7f"
WAREHOUSE_TEST_ADMIN_TOKEN = "test-admin-token-3d8a51"


@pytest.fixture(scope="session")
def warehouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseHandle]:
    """The session's warehouse server; prefer ``warehouse``, which also resets faults."""
    database = Path(tmp_path_factory.mktemp("warehouse")) / "warehouse.db"
    settings = Settings(
        # Two tokens of one client (a rotation in progress), and another client.
        api_tokens=(WAREHOUSE_TEST_API_TOKEN, WAREHOUSE_TEST_ROTATED_API_TOKEN),
        other_clients={"other-shop": (WAREHOUSE_TEST_FOREIGN_API_TOKEN,)},
        admin_token=WAREHOUSE_TEST_ADMIN_TOKEN,
        database_url=f"sqlite:///{database}",
    )
    with serve_warehouse(settings) as handle:
        yield handle


@pytest.fixture
def warehouse(warehouse_server: WarehouseHandle) -> Iterator[WarehouseHandle]:
    """The running warehouse, with no faults at the start and none left behind.

    Attributes of the handle: ``base_url``, ``api_token``, ``rotated_api_token`` (the same
    client), ``foreign_api_token`` (another client), ``admin_token``, ``database_url``; methods ``set_faults(**fields)``, ``get_faults()``,
    ``clear_faults()`` and ``shipments(order_id)``.
    """
    warehouse_server.clear_faults()
    yield warehouse_server
    warehouse_server.clear_faults()
