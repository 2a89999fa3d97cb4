"""The stack's databases, each with a login role that reaches it and no other.

Airflow's metadata, the ledger and the warehouse each get a database and a role of the
same name (``SHIPPING_DATABASE_PREFIX`` + ``airflow`` / ``shipping_ledger`` /
``warehouse``, so several stacks share one server without sharing roles). The role owns
its database, ``CONNECT`` is revoked from ``PUBLIC``, and each service connects as its
role: a task that can read the ledger cannot open Airflow's metadata or the warehouse's
database, and no service holds the server's superuser.

The roles' passwords are generated once and kept in the stack folder's private secrets
file ``database-roles.json`` (0600). When the server's user may not create roles (a
``SHIPPING_POSTGRES_URL`` of a plain user), the stack says so and every service uses
that URL, as before roles existed.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from shipping.ops import localpg
from shipping.ops.localpg import DatabaseRole
from shipping.ops.state import write_private

logger = logging.getLogger(__name__)

#: In the stack folder, mode 0600: ``{"<role>": "<password>"}``.
ROLES_FILE: Final = "database-roles.json"
#: PostgreSQL's SQLSTATE for "permission denied" (``insufficient_privilege``).
INSUFFICIENT_PRIVILEGE: Final = "42501"


@dataclass(frozen=True)
class ServiceDatabases:
    """Each database's URL as its service uses it.

    Attributes:
        urls: Database name (without the prefix) -> URL (as its role, when roles are on).
        roles: Whether each URL is its own role's (False: the server URL's user for all).
    """

    urls: dict[str, str]
    roles: bool


def role_passwords(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """The password of each role in ``names``, generated once and kept in the stack
    folder's ``database-roles.json`` (0600)."""
    path = directory / ROLES_FILE
    kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = {name: kept.get(name) or secrets.token_urlsafe(24) for name in names}
    if any(kept.get(name) != password for name, password in wanted.items()):
        write_private(path, json.dumps(kept | wanted, indent=2))
    return wanted


def ensure_service_databases(
    server_url: str,
    directory: Path,
    names: Iterable[str],
    *,
    prefix: str = "",
    own_server: bool = False,
) -> ServiceDatabases:
    """Create each database in ``names`` (with ``prefix``) unless it exists, each owned by
    its role.

    Args:
        server_url: A URL of the server as a user that may create roles and databases.
        directory: The stack folder, where the roles' passwords are kept.
        names: The databases, without the prefix.
        prefix: ``SHIPPING_DATABASE_PREFIX``.
        own_server: The server is the stack's own (embedded): ``CONNECT`` on its
            ``postgres`` database is revoked from ``PUBLIC`` too, so a role reaches
            nothing but its own database.
    """
    names = list(names)
    full = {name: prefix + name for name in names}
    passwords = role_passwords(directory, full.values())
    try:
        urls = {
            name: localpg.ensure_database(
                server_url, database, owner=DatabaseRole(database, passwords[database])
            )
            for name, database in full.items()
        }
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
            raise
        user = make_url(server_url).username
        logger.warning(
            "user %s of the PostgreSQL server may not create roles: every service "
            "connects as %s (give it CREATEROLE for a role per database)",
            user,
            user,
        )
        urls = {name: localpg.ensure_database(server_url, db) for name, db in full.items()}
        return ServiceDatabases(urls, roles=False)
    if own_server:
        _close_default_database(server_url)
    return ServiceDatabases(urls, roles=True)


def _close_default_database(server_url: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC")
    finally:
        engine.dispose()
