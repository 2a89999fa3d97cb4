"""Fixtures of the warehouse service tests: storage on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warehouse_mock.storage import Storage
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh warehouse database migrated to the latest revision, on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = Storage(url)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def warehouse_storage(warehouse: WarehouseHandle) -> Iterator[Storage]:
    """The database of the shared warehouse server, to set up what the API cannot."""
    store = Storage(warehouse.database_url)
    yield store
    store.dispose()
