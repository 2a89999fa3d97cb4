"""Voided keys and cancelled shipments.

``POST /v1/voids`` turns a key into a tombstone (``state = 'voided'`` with when and why)
and cancels the shipment made under it, if any (``status = 'cancelled'``, ``cancelled_at``).
Columns only: the states are strings already.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the void columns of keys and the cancel column of shipments."""
    op.add_column(
        "idempotency_keys", sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("idempotency_keys", sa.Column("void_reason", sa.String(500), nullable=True))
    op.add_column("shipments", sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop them again (voided keys become unusable rows: downgrade only an unused database)."""
    with op.batch_alter_table("shipments") as batch:
        batch.drop_column("cancelled_at")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("void_reason")
        batch.drop_column("voided_at")
