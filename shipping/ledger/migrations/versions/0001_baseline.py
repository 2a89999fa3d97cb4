"""The ledger as it stood before migrations: orders, runs, lines, tries, amendments.

Creates what is missing, so it also takes up a database made by the hand-written schema
code of earlier releases (tables made by ``create_all``, ``owner_run_id`` added later,
CHECK constraints re-created on PostgreSQL as states were added). The tables are frozen
here as they were; later revisions change them.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _states(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _tables() -> sa.MetaData:
    metadata = sa.MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        }
    )
    when = sa.DateTime(timezone=True)
    document = sa.JSON(none_as_null=True).with_variant(
        postgresql.JSONB(none_as_null=True), "postgresql"
    )
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("ship_to", document, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column(
            "state",
            _states("order_state", "RECEIVED", "SHIPPING", "SHIPPED", "REJECTED"),
            nullable=False,
        ),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.Column("shipped_at", when, nullable=True),
        sa.Column("owner_run_id", sa.String(250), nullable=True),
    )
    sa.Table(
        "order_runs",
        metadata,
        sa.Column(
            "order_id",
            sa.String(64),
            sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("run_id", sa.String(250), primary_key=True),
        sa.Column("role", _states("run_role", "OWNER", "DUPLICATE", "REFUSED"), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("recorded_at", when, nullable=False),
    )
    lines = sa.Table(
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
        sa.Column(
            "state",
            _states("line_state", "PENDING", "SHIPPED", "FAILED", "CANCELLED"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("shipment_id", sa.String(255), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.UniqueConstraint("order_id", "position"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
    )
    sa.Table(
        "line_tries",
        metadata,
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("line_id", sa.String(64), primary_key=True),
        sa.Column("try_number", sa.Integer, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("outcome", _states("try_outcome", "SHIPPED", "FAILED"), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("recorded_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id", "line_id"], [lines.c.order_id, lines.c.line_id], ondelete="CASCADE"
        ),
        sa.CheckConstraint("requests >= 0", name="requests_not_negative"),
    )
    sa.Table(
        "line_amendments",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("line_id", sa.String(64), nullable=False),
        sa.Column("action", _states("amendment", "FIX", "CANCEL"), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("old_sku", sa.String(64), nullable=False),
        sa.Column("old_quantity", sa.Integer, nullable=False),
        sa.Column("new_sku", sa.String(64), nullable=True),
        sa.Column("new_quantity", sa.Integer, nullable=True),
        sa.Column("recorded_at", when, nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id", "line_id"], [lines.c.order_id, lines.c.line_id], ondelete="CASCADE"
        ),
        sa.Index(None, "order_id", "line_id"),
    )
    return metadata


def upgrade() -> None:
    bind = op.get_bind()
    metadata = _tables()
    metadata.create_all(bind, checkfirst=True)
    present = {column["name"] for column in sa.inspect(bind).get_columns("orders")}
    if "owner_run_id" not in present:  # a ledger from before runs were recorded
        op.add_column("orders", sa.Column("owner_run_id", sa.String(250), nullable=True))
    if bind.dialect.name == "postgresql":
        # Releases before migrations added states by re-creating the CHECKs: make them
        # the baseline's, whatever release made the database.
        for table in metadata.sorted_tables:
            for constraint in table.constraints:
                if isinstance(constraint, sa.CheckConstraint) and isinstance(constraint.name, str):
                    op.execute(
                        f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {constraint.name}"
                    )
                    op.execute(sa.schema.AddConstraint(constraint))


def downgrade() -> None:
    for table in reversed(_tables().sorted_tables):
        op.drop_table(table.name)
