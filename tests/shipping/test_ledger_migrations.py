"""The ledger's Alembic migrations: an empty database, and one made by b80d08c's code."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shipping.ledger import Amendment, Ledger, LineState, create_schema, engine_from_url
from shipping.ledger.schema import metadata
from tests.shipping import legacy_ledger_schema_b80d08c

# Each test takes a fresh copy of the old module: its create_schema, on PostgreSQL, marks
# its CHECK constraints as created apart (SQLAlchemy's AddConstraint), which would leave
# them out of the next test's tables.
legacy = legacy_ledger_schema_b80d08c


@pytest.fixture(autouse=True)
def _fresh_legacy_module() -> None:
    global legacy
    legacy = importlib.reload(legacy_ledger_schema_b80d08c)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database, on each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = engine_from_url(database_url)
    yield engine
    engine.dispose()


def test_an_empty_database_gets_exactly_the_models_schema(engine: sa.Engine) -> None:
    """upgrade head on nothing makes the tables the code declares, no more, no less."""
    create_schema(engine)
    with engine.connect() as conn:
        differences = compare_metadata(
            MigrationContext.configure(conn, opts={"version_table": "ledger_alembic_version"}),
            metadata,
        )
        version = conn.execute(sa.text("SELECT version_num FROM ledger_alembic_version")).all()
    assert differences == []
    assert version == [("0002",)]


def test_migrating_twice_changes_nothing(engine: sa.Engine) -> None:
    """A second start (or a second process) finds the database at head."""
    create_schema(engine)
    with engine.connect() as conn:
        before = sorted(sa.inspect(conn).get_table_names())
    create_schema(engine)
    with engine.connect() as conn:
        assert sorted(sa.inspect(conn).get_table_names()) == before


def legacy_rows(engine: sa.Engine) -> None:
    """A ledger as b80d08c left it: a shipped line, a refused one, a fix and a cancel."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    legacy.create_schema(engine)
    ship_to = {"name": "A", "line1": "1 St", "city": "B", "postal_code": "1", "country": "DE"}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(legacy.orders).values(
                order_id="OLD-1",
                customer_id="C",
                ship_to=ship_to,
                content_hash="h",
                state=legacy.OrderState.SHIPPING,
                created_at=now,
                updated_at=now,
                owner_run_id="order-OLD-1",
            )
        )
        for position, (line_id, state, shipment, error) in enumerate(
            [
                ("1", legacy.LineState.SHIPPED, "shp-1", None),
                ("2", legacy.LineState.FAILED, None, "SkuRefused: warehouse answered 422"),
                ("3", legacy.LineState.CANCELLED, None, "SkuRefused: gone"),
            ]
        ):
            conn.execute(
                sa.insert(legacy.order_lines).values(
                    order_id="OLD-1",
                    line_id=line_id,
                    position=position,
                    sku="MUG-RED",
                    quantity=2,
                    idempotency_key=f"OLD-1:{line_id}",
                    state=state,
                    attempts=1,
                    shipment_id=shipment,
                    last_error=error,
                    created_at=now,
                    updated_at=now,
                )
            )
        conn.execute(
            sa.insert(legacy.line_amendments).values(
                order_id="OLD-1",
                line_id="3",
                action=legacy.Amendment.CANCEL,
                actor="ada",
                reason="discontinued",
                old_sku="MUG-RED",
                old_quantity=2,
                recorded_at=now,
            )
        )


def test_a_ledger_made_by_b80d08c_keeps_its_rows_and_gains_the_fence(
    engine: sa.Engine, database_url: str
) -> None:
    """Upgrading b80d08c's ledger keeps every order, line and amendment; lines start at
    revision 0 under their key, errors get their class, and the new states are allowed."""
    legacy_rows(engine)
    create_schema(engine)
    with engine.connect() as conn:
        assert (
            compare_metadata(
                MigrationContext.configure(conn, opts={"version_table": "ledger_alembic_version"}),
                metadata,
            )
            == []
        )
    ledger = Ledger.from_url(database_url)
    try:
        status = ledger.get_order("OLD-1")
        assert status is not None
        assert [
            (x.line_id, x.state, x.shipment_id, x.revision, x.idempotency_key, x.error_class)
            for x in status.lines
        ] == [
            ("1", LineState.SHIPPED, "shp-1", 0, "OLD-1:1", None),
            ("2", LineState.FAILED, None, 0, "OLD-1:2", "SkuRefused"),
            ("3", LineState.CANCELLED, None, 0, "OLD-1:3", "SkuRefused"),
        ]
        [amendment] = status.amendments
        assert (amendment.action, amendment.actor, amendment.void_key) == (
            Amendment.CANCEL,
            "ada",
            None,
        )
        fixed = ledger.amend_line(
            order_id="OLD-1", line_id="2", action=Amendment.CANCEL, actor="ada", reason="r"
        )
        assert (fixed.state, fixed.void_key) == (LineState.CANCELLING, "OLD-1:2")
    finally:
        ledger.dispose()


def test_a_ledger_older_than_run_ownership_is_upgraded_too(engine: sa.Engine) -> None:
    """A ledger from before order_runs and owner_run_id gains them (the baseline adds them)."""
    legacy.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE order_runs"))
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN owner_run_id"))
    create_schema(engine)
    with engine.connect() as conn:
        assert (
            compare_metadata(
                MigrationContext.configure(conn, opts={"version_table": "ledger_alembic_version"}),
                metadata,
            )
            == []
        )
