"""Tests of the warehouse against its own database: a restart, and a database failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.warehouse_mock.support import (
    assert_problem,
    key_for,
    new_order_id,
    post_shipment,
    shipment_body,
)
from warehouse_mock.settings import Settings
from warehouse_mock.storage import IdempotencyRecord, Storage
from warehouse_mock.testing import WarehouseHandle, serve_warehouse


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a warehouse of its own, on a SQLite file in the test's folder."""
    return Settings(
        api_tokens=("client-token-database",),
        admin_token="admin-token-database",
        database_url=f"sqlite:///{tmp_path / 'warehouse.db'}",
    )


@pytest.fixture
def own_warehouse(settings: Settings) -> Iterator[WarehouseHandle]:
    """A warehouse server that this test alone uses."""
    with serve_warehouse(settings) as handle:
        yield handle


def test_stored_response_and_shipment_survive_a_restart(settings: Settings) -> None:
    """A new server on the same database replays the stored 201 and shows the shipment."""
    body = shipment_body(new_order_id())
    with serve_warehouse(settings) as before:
        first = post_shipment(before, body, key_for(body))
    assert first.status_code == 201

    with serve_warehouse(settings) as after:
        again = post_shipment(after, body, key_for(body))
        shipments = after.shipments(body["order_id"])
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert shipments == [first.json()]


def test_database_failure_while_claiming_is_a_503_problem(
    own_warehouse: WarehouseHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """When the claim cannot be written the answer is a retryable 503, and it is logged."""
    storage = Storage(own_warehouse.database_url)
    IdempotencyRecord.__table__.drop(storage.engine)  # the claim's INSERT now fails
    storage.dispose()

    body = shipment_body(new_order_id())
    response = post_shipment(own_warehouse, body, key_for(body))
    assert_problem(response, 503, "/problems/service-unavailable")
    assert "Retry-After" in response.headers
    assert "claiming key" in caplog.text


def test_database_is_created_with_both_tables(own_warehouse: WarehouseHandle) -> None:
    """The package creates its schema at startup; no test or migration step is needed."""
    engine = sa.create_engine(own_warehouse.database_url)
    assert {"shipments", "idempotency_keys"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()
