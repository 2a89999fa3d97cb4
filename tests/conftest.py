"""Fixtures shared by the whole suite: a real PostgreSQL server.

PostgreSQL comes from ``SHIPPING_POSTGRES_URL`` when it is set; otherwise the suite starts
the embedded server of :mod:`shipping.localpg` once per session, so a fresh laptop with
no database service runs the PostgreSQL tests too (they are never skipped).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipping import localpg


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a PostgreSQL server on which tests may create their own databases."""
    given = os.environ.get("SHIPPING_POSTGRES_URL")
    if given:
        return given
    # A short base path keeps the server's Unix socket under the OS path-length limit.
    return localpg.start(Path(tmp_path_factory.mktemp("pg")) / "data", keep_running=False)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = localpg.ensure_database(postgres_server_url, name)
    yield url
    localpg.drop_database(postgres_server_url, name)
