"""The ledger's schema code as it was at b80d08c, frozen: it makes the databases that the
migration tests upgrade. Only the states are copied in (they lived in models.py) and the
engine helpers dropped; nothing else changed. Do not edit: it is a record."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


class OrderState(StrEnum):
    RECEIVED = "RECEIVED"
    SHIPPING = "SHIPPING"
    SHIPPED = "SHIPPED"
    REJECTED = "REJECTED"


class LineState(StrEnum):
    PENDING = "PENDING"
    SHIPPED = "SHIPPED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class Amendment(StrEnum):
    FIX = "FIX"
    CANCEL = "CANCEL"


class RunRole(StrEnum):
    OWNER = "OWNER"
    DUPLICATE = "DUPLICATE"
    REFUSED = "REFUSED"


class TryOutcome(StrEnum):
    SHIPPED = "SHIPPED"
    FAILED = "FAILED"


logger = logging.getLogger(__name__)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect (SQLite stores it naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger's clock must return timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _state_type(enum: type[StrEnum], name: str) -> sa.Enum:
    # VARCHAR plus a CHECK rather than a native PostgreSQL enum: adding a state later is
    # then a plain constraint change on both dialects.
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


metadata: Final = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

_JSON: Final = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

orders: Final = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("ship_to", _JSON, nullable=True),  # None for rejected orders
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("state", _state_type(OrderState, "order_state"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("shipped_at", UTCDateTime, nullable=True),
    # Added after the first release: create_schema adds it to older databases.
    sa.Column("owner_run_id", sa.String(250), nullable=True),
)

order_runs: Final = sa.Table(
    "order_runs",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("role", _state_type(RunRole, "run_role"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
)

order_lines: Final = sa.Table(
    "order_lines",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("state", _state_type(LineState, "line_state"), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("shipment_id", sa.String(255), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("order_id", "position"),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
)

line_tries: Final = sa.Table(
    "line_tries",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("outcome", _state_type(TryOutcome, "try_outcome"), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.CheckConstraint("requests >= 0", name="requests_not_negative"),
)

line_amendments: Final = sa.Table(
    "line_amendments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=False),
    sa.Column("action", _state_type(Amendment, "amendment"), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("old_sku", sa.String(64), nullable=False),
    sa.Column("old_quantity", sa.Integer, nullable=False),
    sa.Column("new_sku", sa.String(64), nullable=True),
    sa.Column("new_quantity", sa.Integer, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.Index(None, "order_id", "line_id"),
)

# Serializes concurrent create_schema calls on PostgreSQL (any constant shared by callers).
_SCHEMA_LOCK_KEY: Final = 0x5348495050494E47  # "SHIPPING"


def create_schema(engine: sa.Engine) -> None:
    """Create the ledger's tables that do not exist yet; safe to call again and concurrently.

    Args:
        engine: An engine on the ledger's database.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # DDL is transactional on PostgreSQL: with the lock, racing callers see the
            # tables created by the first one instead of failing on duplicate types.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        metadata.create_all(conn, checkfirst=True)
        _add_missing_columns(conn)
        if conn.dialect.name == "postgresql":
            _refresh_checks(conn)


def _refresh_checks(conn: sa.Connection) -> None:
    """Re-create the CHECK constraints, so a state added by a later release is allowed.

    (PostgreSQL only: SQLite cannot alter a constraint; its ledgers are for tests.)
    """
    for table in metadata.sorted_tables:
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint) and isinstance(constraint.name, str):
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {constraint.name}"
                )
                conn.execute(sa.schema.AddConstraint(constraint))


def _add_missing_columns(conn: sa.Connection) -> None:
    """Add the nullable columns that a database made by an older release lacks."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            assert column.nullable, f"{table.name}.{column.name}: only nullable columns are added"
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
            logger.warning("ledger: added column %s.%s", table.name, column.name)
