"""Alembic environment of the warehouse: runs on the connection the service passes in.

Started only through :func:`warehouse_mock.migrations.upgrade_to_head` (the service's
start-up), never as ``alembic upgrade`` with a URL: the start-up holds the PostgreSQL
advisory lock and the transaction the upgrade must run in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from warehouse_mock.migrations import VERSION_TABLE
from warehouse_mock.storage import Base


def run_migrations() -> None:
    """Run the pending revisions on the connection handed over in the configuration."""
    if context.is_offline_mode():
        raise RuntimeError("the warehouse migrations run online only, at service start")
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError(
            "run the warehouse migrations through warehouse_mock.migrations.upgrade_to_head"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
