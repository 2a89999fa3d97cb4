"""Alembic's entry point for the ledger: runs on the connection the caller passes.

:func:`shipping.ledger.schema.create_schema` opens the connection and its transaction
(and, on PostgreSQL, takes the advisory lock) before it calls ``upgrade``; this file only
runs the migrations on it. Render-as-batch lets the same migration alter a SQLite table
(by copying it) and a PostgreSQL one (in place).
"""

from __future__ import annotations

from alembic import context

from shipping.ledger.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    version_table="ledger_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
