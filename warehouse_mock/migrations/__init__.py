"""Alembic migrations of the warehouse database, run by the service itself at start.

No ``alembic.ini`` is needed: :func:`upgrade_to_head` builds the configuration in code and
hands Alembic the caller's connection, so the upgrade runs inside the caller's
transaction (and, on PostgreSQL, under its advisory lock). ``env.py`` refuses to run any
other way.

Revisions (``versions/``):

- ``0001`` the schema of b80d08c, the last version before migrations: shipments, the
  idempotency keys and their indexes. Idempotent: on a database that version (or an older
  one) created it adds only what is missing, so such a database is taken over in place.
- ``0002`` voided keys (``voided_at``, ``void_reason``) and cancelled shipments
  (``cancelled_at``).

A new revision is a new file in ``versions/`` whose ``down_revision`` is the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

#: The table Alembic records the database's revision in.
VERSION_TABLE: Final = "warehouse_alembic_version"
_SCRIPT_LOCATION: Final = str(Path(__file__).resolve().parent)


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """The Alembic configuration of the warehouse, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: sa.Connection) -> None:
    """Upgrade the database of ``connection`` to the latest revision, in its transaction."""
    command.upgrade(alembic_config(connection), "head")


def head_revision() -> str:
    """The latest revision of the scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the warehouse has no migration scripts")
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database of ``connection`` is at; None if never migrated."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()
