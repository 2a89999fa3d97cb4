"""Fixtures of the domain tests: a SQLite ledger and a client of the session's warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipping.ledger import Ledger
from shipping.warehouse import RetryPolicy, WarehouseClient
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """An empty ledger in a SQLite file (test_ledger.py runs its own on both dialects)."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    yield ledger
    ledger.dispose()


@pytest.fixture
def client(warehouse: WarehouseHandle) -> Iterator[WarehouseClient]:
    """A client of the test warehouse that never really waits."""
    with WarehouseClient(
        warehouse.base_url, warehouse.api_token, retry=RetryPolicy(), sleep=lambda _: None
    ) as client:
        yield client
