"""Tests of the warehouse against its own database: a restart, a database failure, and the
start over rows of retired tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.warehouse_mock.support import (
    assert_problem,
    key_for,
    make_b80d08c_database,
    new_order_id,
    post_shipment,
    shipment_body,
)
from warehouse_mock.app import create_app
from warehouse_mock.service import legacy_token_scope
from warehouse_mock.settings import Settings
from warehouse_mock.storage import IdempotencyRecord, LegacyScopeError, Storage
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


RETIRED_TOKEN = "client-token-retired"


def test_start_is_refused_over_rows_of_a_token_that_is_neither_configured_nor_retired(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A database holding rows of a rotated-out token does not start, and says what to set."""
    make_b80d08c_database(settings.database_url, legacy_token_scope(RETIRED_TOKEN))
    app = create_app(settings)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - start-up fails

    # A thread of its own: the session may already run an event loop in this one (the
    # browser tests' Playwright), where asyncio.run() refuses to start.
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        pytest.raises(LegacyScopeError, match="WAREHOUSE_RETIRED_TOKENS"),
    ):
        pool.submit(asyncio.run, start()).result()
    assert "the warehouse cannot start" in caplog.text


def test_rows_of_a_retired_token_move_to_its_client_and_keep_their_key(
    settings: Settings,
) -> None:
    """Given the retired token, its rows move to the client: the key replays, never re-ships."""
    body = shipment_body(new_order_id())
    shipment_id = make_b80d08c_database(
        settings.database_url, legacy_token_scope(RETIRED_TOKEN), key_for(body), body
    )
    upgraded = Settings(
        **settings.model_dump(exclude={"retired_tokens"}),
        retired_tokens={"default": (RETIRED_TOKEN,)},
    )
    with serve_warehouse(upgraded) as warehouse:
        again = post_shipment(warehouse, body, key_for(body))
        old_token = post_shipment(warehouse, body, key_for(body), token=RETIRED_TOKEN)
        shipments = warehouse.shipments(body["order_id"])
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["shipment_id"] == shipment_id
    assert [s["shipment_id"] for s in shipments] == [shipment_id]
    assert_problem(old_token, 401, "/problems/unauthorized")  # retired: never accepted
