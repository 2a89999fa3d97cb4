"""Tests of the warehouse's Alembic migrations: an empty database, and one made by b80d08c.

b80d08c is the last version that made its schema by hand (``create_all`` plus patching);
its storage module is frozen in :mod:`tests.warehouse_mock.legacy_storage_b80d08c`. Each
test runs on a SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.warehouse_mock import legacy_storage_b80d08c as legacy
from warehouse_mock.migrations import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
)
from warehouse_mock.storage import (
    SHIPMENT_CANCELLED,
    Base,
    Claim,
    Replay,
    Storage,
    Voided,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SCOPE = "default"
FINGERPRINT = "f" * 64


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def b80d08c_database(database_url: str) -> str:
    """A database made by b80d08c's ``create_schema``, holding one completed key and one
    in-flight claim."""
    old = legacy.Storage(database_url)
    old.create_schema()
    claim = old.claim(
        scope=SCOPE, idempotency_key="ORD-1:1", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert isinstance(claim, legacy.Claim)
    old.complete(
        claim=claim,
        shipment=legacy.NewShipment(
            shipment_id="shp_old",
            order_id="ORD-1",
            line_id="1",
            sku="MUG",
            quantity=1,
            ship_to={"name": "A"},
            status="created",
            created_at=NOW,
        ),
        response_status=201,
        response_body='{"shipment_id": "shp_old"}',
        now=NOW,
    )
    pending = old.claim(
        scope=SCOPE, idempotency_key="ORD-1:2", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert isinstance(pending, legacy.Claim)
    old.dispose()
    return database_url


def schema_of(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns, keys, indexes and constraints as the database reports them."""
    inspector = sa.inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - {VERSION_TABLE}):
        schema[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(
                (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (uq["name"], tuple(uq["column_names"]))
                for uq in inspector.get_unique_constraints(table)
            ),
        }
    return schema


def test_empty_database_is_migrated_to_the_head_revision(database_url: str) -> None:
    """An empty database gets every revision, and the result is what the models describe."""
    storage = Storage(database_url)
    storage.migrate()
    with storage.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), Base.metadata
        )
    storage.dispose()
    assert diffs == []


def test_baseline_revision_creates_the_schema_b80d08c_created(database_url: str) -> None:
    """Revision 0001 on an empty database gives exactly the tables of b80d08c's create_schema."""
    old = legacy.Storage(database_url)
    old.create_schema()
    made_by_b80d08c = schema_of(old.engine)
    with old.engine.begin() as conn:
        for table in ("idempotency_keys", "shipments"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
    with old.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    assert schema_of(old.engine) == made_by_b80d08c
    old.dispose()


def test_database_made_by_b80d08c_is_migrated_with_its_rows(b80d08c_database: str) -> None:
    """The tables b80d08c made are taken over in place: rows stay, keys replay, voids work."""
    storage = Storage(b80d08c_database)
    storage.migrate()
    with storage.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
    shipment = storage.get_shipment("shp_old")
    assert shipment is not None
    assert (shipment.idempotency_key, shipment.status, shipment.cancelled_at) == (
        "ORD-1:1",
        "created",
        None,
    )
    replay = storage.claim(
        scope=SCOPE, idempotency_key="ORD-1:1", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert replay == Replay(201, '{"shipment_id": "shp_old"}', "shp_old")
    pending = storage.key_record(SCOPE, "ORD-1:2")
    assert pending is not None
    assert pending.state == "in_flight"

    outcome = storage.void(scope=SCOPE, idempotency_key="ORD-1:1", reason="test", now=NOW)
    assert outcome.shipment is not None
    assert outcome.shipment.status == SHIPMENT_CANCELLED
    storage.dispose()


def test_migrating_twice_changes_nothing(b80d08c_database: str) -> None:
    """A restart on a migrated database finds nothing to do and keeps the rows."""
    for _ in range(2):
        storage = Storage(b80d08c_database)
        storage.migrate()
        storage.dispose()
    storage = Storage(b80d08c_database)
    assert storage.get_shipment("shp_old") is not None
    storage.dispose()


def test_database_older_than_the_unique_index_gets_it(database_url: str) -> None:
    """A database made before the one-shipment-per-key index gets it from the baseline."""
    old = legacy.Storage(database_url)
    old.create_schema()
    with old.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX uq_shipments_scope_idempotency_key"))
    old.dispose()
    storage = Storage(database_url)
    storage.migrate()
    assert "uq_shipments_scope_idempotency_key" in {
        index["name"] for index in sa.inspect(storage.engine).get_indexes("shipments")
    }
    storage.dispose()


def test_migrated_database_refuses_a_voided_key(b80d08c_database: str) -> None:
    """After the upgrade a key voided in the old rows' database can never be claimed."""
    storage = Storage(b80d08c_database)
    storage.migrate()
    storage.void(scope=SCOPE, idempotency_key="ORD-1:2", reason="operator cancel", now=NOW)
    again = storage.claim(
        scope=SCOPE, idempotency_key="ORD-1:2", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert isinstance(again, Voided)
    storage.dispose()


@pytest.mark.postgres
def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """Several start-ups at once on one empty PostgreSQL database all succeed (advisory lock)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        storage = Storage(postgres_url)
        try:
            barrier.wait()
            storage.migrate()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            storage.dispose()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    storage = Storage(postgres_url)
    claim = storage.claim(
        scope=SCOPE, idempotency_key="K", fingerprint=FINGERPRINT, lease_seconds=30, now=NOW
    )
    assert isinstance(claim, Claim)
    storage.dispose()
