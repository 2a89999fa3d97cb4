"""The fence of operators' amendments, and errors classified.

Lines get a revision (each fix adds one, and the line ships under a new key), the key
still to be voided at the warehouse (``void_key``), the CANCELLING state (cancelled,
its key not yet voided), and their last error's class and finality. Amendments record
the void they asked for and its confirmation, and the VOID action (reconciliation).
Existing lines keep revision 0 and their key; a last error's class is read back from its
message (``"<Class>: ..."``, how earlier releases wrote it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LINE_STATES = ("PENDING", "SHIPPED", "FAILED", "CANCELLING", "CANCELLED")
_ACTIONS = ("FIX", "CANCEL", "VOID")
_CLASS = re.compile(r"^([A-Z][A-Za-z0-9_]{0,63}):")


def _check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _checks(table: str) -> set[str]:
    """The names of ``table``'s CHECK constraints as the database has them."""
    return {
        str(c["name"]) for c in sa.inspect(op.get_bind()).get_check_constraints(table) if c["name"]
    }


def upgrade() -> None:
    # A state CHECK the database lacks (a table made without it) is not dropped, only made.
    line_checks, amendment_checks = _checks("order_lines"), _checks("line_amendments")
    with op.batch_alter_table("order_lines", recreate="auto") as batch:
        batch.add_column(sa.Column("error_class", sa.String(64), nullable=True))
        batch.add_column(sa.Column("error_final", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("void_key", sa.String(255), nullable=True))
        if "ck_order_lines_line_state" in line_checks:
            batch.drop_constraint(op.f("ck_order_lines_line_state"), type_="check")
        batch.create_check_constraint("line_state", _check("state", _LINE_STATES))
    with op.batch_alter_table("line_amendments", recreate="auto") as batch:
        batch.add_column(sa.Column("void_key", sa.String(255), nullable=True))
        batch.add_column(sa.Column("voided_shipment_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))
        if "ck_line_amendments_amendment" in amendment_checks:
            batch.drop_constraint(op.f("ck_line_amendments_amendment"), type_="check")
        batch.create_check_constraint("amendment", _check("action", _ACTIONS))
    bind = op.get_bind()
    lines = sa.table(
        "order_lines",
        sa.column("order_id"),
        sa.column("line_id"),
        sa.column("last_error"),
        sa.column("error_class"),
    )
    failed = bind.execute(
        sa.select(lines.c.order_id, lines.c.line_id, lines.c.last_error).where(
            lines.c.last_error.is_not(None)
        )
    ).all()
    for order_id, line_id, last_error in failed:
        if match := _CLASS.match(last_error):
            bind.execute(
                sa.update(lines)
                .where(lines.c.order_id == order_id, lines.c.line_id == line_id)
                .values(error_class=match.group(1))
            )


def downgrade() -> None:
    with op.batch_alter_table("line_amendments", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_line_amendments_amendment"), type_="check")
        batch.create_check_constraint("amendment", _check("action", _ACTIONS[:2]))
        batch.drop_column("voided_at")
        batch.drop_column("voided_shipment_id")
        batch.drop_column("void_key")
    with op.batch_alter_table("order_lines", recreate="auto") as batch:
        batch.drop_constraint(op.f("ck_order_lines_line_state"), type_="check")
        batch.create_check_constraint(
            "line_state", _check("state", tuple(s for s in _LINE_STATES if s != "CANCELLING"))
        )
        batch.drop_column("void_key")
        batch.drop_column("revision")
        batch.drop_column("error_final")
        batch.drop_column("error_class")
