"""Baseline: the schema b80d08c created, taken over in place where it exists.

Before migrations, ``Storage.create_schema`` made the tables with ``create_all`` and then
added the unique index of shipments per key to databases made before that index. This
revision does the same, idempotently: it creates each table and index that is missing and
leaves existing ones (and their rows) alone. The DDL is frozen here; later changes go in
later revisions, never into the models alone.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import IntegrityError

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_UNIQUE_SHIPMENT_PER_KEY = "uq_shipments_scope_idempotency_key"


def upgrade() -> None:
    """Create the tables and indexes that do not exist yet."""
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    if "shipments" not in tables:
        op.create_table(
            "shipments",
            sa.Column("shipment_id", sa.String(40), nullable=False),
            sa.Column("scope", sa.String(64), nullable=False),
            sa.Column("idempotency_key", sa.String(255), nullable=False),
            sa.Column("order_id", sa.String(64), nullable=False),
            sa.Column("line_id", sa.String(64), nullable=False),
            sa.Column("sku", sa.String(64), nullable=False),
            sa.Column("quantity", sa.Integer(), nullable=False),
            sa.Column("ship_to", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("shipment_id", name="pk_shipments"),
        )
        op.create_index("ix_shipments_order_id", "shipments", ["order_id"])
    indexes = {index["name"] for index in sa.inspect(bind).get_indexes("shipments")}
    if _UNIQUE_SHIPMENT_PER_KEY not in indexes:
        # A database older than the rule may hold two shipments under one key.
        try:
            op.create_index(
                _UNIQUE_SHIPMENT_PER_KEY, "shipments", ["scope", "idempotency_key"], unique=True
            )
        except IntegrityError as exc:
            raise RuntimeError(
                "cannot make shipments unique per idempotency key: two shipments share a "
                f"key; resolve by hand ({exc.orig})"
            ) from None
    if "idempotency_keys" not in tables:
        op.create_table(
            "idempotency_keys",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("scope", sa.String(64), nullable=False),
            sa.Column("idempotency_key", sa.String(255), nullable=False),
            sa.Column("fingerprint", sa.String(64), nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("claim_token", sa.String(32), nullable=True),
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("response_status", sa.Integer(), nullable=True),
            sa.Column("response_body", sa.Text(), nullable=True),
            sa.Column("shipment_id", sa.String(40), nullable=True),
            sa.ForeignKeyConstraint(
                ["shipment_id"],
                ["shipments.shipment_id"],
                name="fk_idempotency_keys_shipment_id_shipments",
            ),
            sa.PrimaryKeyConstraint("id", name="pk_idempotency_keys"),
            sa.UniqueConstraint(
                "scope", "idempotency_key", name="uq_idempotency_keys_scope_idempotency_key"
            ),
            sa.UniqueConstraint("shipment_id", name="uq_idempotency_keys_shipment_id"),
        )
        op.create_index("ix_idempotency_keys_completed_at", "idempotency_keys", ["completed_at"])


def downgrade() -> None:
    """Drop the warehouse's tables."""
    op.drop_table("idempotency_keys")
    op.drop_table("shipments")
