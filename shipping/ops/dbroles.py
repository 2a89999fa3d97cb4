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
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ProgrammingError

from shipping.ops import localpg
from shipping.ops.state import write_private

logger = logging.getLogger(__name__)

#: In the stack folder, mode 0600: ``{"<role>": "<password>"}``.
ROLES_FILE: Final = "database-roles.json"
#: PostgreSQL's SQLSTATE for "permission denied" (``insufficient_privilege``).
INSUFFICIENT_PRIVILEGE: Final = "42501"


@dataclass(frozen=True)
class DatabaseRole:
    """The login role that owns one database and reaches no other.

    Attributes:
        name: The role's name (the database's name: unique per stack on a shared server).
        password: Its password (generated, kept in the stack's private secrets file).
    """

    name: str
    password: str


def ensure_owned_database(server_url: str, name: str, owner: DatabaseRole) -> str:
    """Create database ``name`` on the server of ``server_url``, owned by ``owner``.

    The role is created (or its password set), made the owner of the database (an
    existing one too) and of every object in it, and every privilege of ``PUBLIC`` on
    the database (``CONNECT``, ``TEMPORARY``) is revoked: only the owner (and superusers)
    can connect.

    Returns:
        The URL of that database as ``owner``.

    Raises:
        sqlalchemy.exc.ProgrammingError: ``server_url``'s user may not create roles or
            databases (SQLSTATE :data:`INSUFFICIENT_PRIVILEGE`).
    """
    url = make_url(server_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    quote = engine.dialect.identifier_preparer.quote
    database, role = quote(name), quote(owner.name)
    try:
        with engine.connect() as conn:
            _ensure_role(conn, owner, role)
            current_owner = conn.execute(
                sa.text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name"),
                {"name": name},
            ).scalar()
            if current_owner is None:
                conn.execute(sa.text(f"CREATE DATABASE {database} OWNER {role}"))
            elif current_owner != owner.name:
                conn.execute(sa.text(f"ALTER DATABASE {database} OWNER TO {role}"))
            conn.execute(sa.text(f"REVOKE ALL ON DATABASE {database} FROM PUBLIC"))
    finally:
        engine.dispose()
    _own_everything(url.set(database=name), owner)
    role_url = url.set(database=name, username=owner.name, password=owner.password)
    return role_url.render_as_string(hide_password=False)


def _ensure_role(conn: sa.Connection, role: DatabaseRole, quoted: str) -> None:
    exists = conn.execute(
        sa.text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": role.name}
    ).scalar()
    verb = "ALTER" if exists else "CREATE"
    # Utility statements take no server-side parameters: psycopg2 quotes the password
    # into the statement on the client.
    conn.exec_driver_sql(
        f"{verb} ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s",
        (role.password,),
    )


#: Every relation, standalone sequence, type and routine in ``database`` not owned by
#: the role yet (extension members and sequences owned by a column move with theirs).
_FOREIGN_OBJECTS = """
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, :role)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND pg_get_userbyid(c.relowner) <> :role
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
UNION ALL
SELECT format('ALTER TYPE %I.%I OWNER TO %I', n.nspname, t.typname, :role)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype IN ('e', 'd', 'r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_get_userbyid(t.typowner) <> :role
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e')
UNION ALL
SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, :role)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND pg_get_userbyid(p.proowner) <> :role
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, :role)
FROM pg_namespace n
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
  AND n.nspname NOT LIKE 'pg_%' AND pg_get_userbyid(n.nspowner) <> :role
"""


def _own_everything(database_url: URL, role: DatabaseRole) -> None:
    """Give ``role`` what an older stack made in the database as another user (its
    tables, sequences, types): a database made by the role itself has nothing to move."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            statements = conn.execute(sa.text(_FOREIGN_OBJECTS), {"role": role.name}).scalars()
            for statement in list(statements):
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


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
            name: ensure_owned_database(
                server_url, database, DatabaseRole(database, passwords[database])
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
        close_default_database(server_url)
    return ServiceDatabases(urls, roles=True)


def close_default_database(server_url: str) -> None:
    """Revoke ``CONNECT`` and ``TEMPORARY`` on the server's ``postgres`` database from
    ``PUBLIC``, so that a role reaches nothing but its own database (on a server of the
    stack's own: the local stack's embedded one, compose's ``postgres`` service)."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC")
    finally:
        engine.dispose()
