"""The compose stack's databases: one login role per service, each reaching its own only.

docker-compose.yaml gives each service the URL it connects with: Airflow's components
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` (role ``airflow``), the ledger
``SHIPPING_LEDGER_URL`` and the DAG's ``shipping_ledger`` connection (role
``shipping_ledger``), the warehouse ``WAREHOUSE_DATABASE_URL`` (role ``warehouse``).
``airflow-init``, the only service that gets the PostgreSQL superuser's password
(``SHIPPING_POSTGRES_URL``), runs ``python -m shipping.ops.compose_databases`` on every
``up``: for each of those URLs it makes the URL's user a login role with the URL's
password that owns the URL's database and everything in it, and closes the database to
``PUBLIC`` (:func:`shipping.ops.dbroles.ensure_owned_database`, as the local stack does);
then ``CONNECT`` on the server's ``postgres`` database is revoked from ``PUBLIC`` too. The
roles are derived from the very URLs the services use, so the two cannot drift apart. A
volume of an older stack (every database owned by the superuser) is handed over the same
way, tables included.

``python -m shipping.ops.compose_databases --check``, in any service's container, tries
each of those URLs present in its environment against every database of the stack and
the server's ``postgres``, and exits 1 unless each role reaches its own database and no
other (``make compose-demo`` runs it). Neither command prints a password.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from shipping import contract
from shipping.ops import dbroles

#: The PostgreSQL server as its superuser: airflow-init's environment only.
SERVER_URL_VAR: Final = "SHIPPING_POSTGRES_URL"
#: The URL each service connects with; its user is the role that owns its database.
SERVICE_URL_VARS: Final = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "SHIPPING_LEDGER_URL",
    "WAREHOUSE_DATABASE_URL",
)
#: What ``--check`` tries each role against: the stack's databases and the server's own.
PROBED_DATABASES: Final = (
    contract.AIRFLOW_DATABASE,
    contract.LEDGER_DATABASE,
    contract.WAREHOUSE_DATABASE,
    "postgres",
)


class RoleSetupError(ValueError):
    """The service URLs cannot be given roles of their own (named in the message)."""


def service_roles(server_url: str, urls: Mapping[str, str]) -> dict[str, URL]:
    """Each service URL, checked to name a role of its own, by variable.

    Raises:
        RoleSetupError: A URL lacks a user, password or database, two services share a
            role or a database, or a service would connect as the server's superuser
            (making it a role of its own would strip the superuser of its powers).
    """
    superuser = make_url(server_url).username
    parsed: dict[str, URL] = {}
    for var, url in urls.items():
        role = make_url(url)
        if not (role.username and role.password and role.database):
            raise RoleSetupError(f"{var} names no user, password and database")
        if role.username == superuser:
            raise RoleSetupError(f"{var} connects as the superuser {superuser}: give it a role")
        parsed[var] = role
    for field in ("username", "database"):
        values = [getattr(role, field) for role in parsed.values()]
        if len(set(values)) != len(values):
            raise RoleSetupError(f"two services share a {field}: each needs its own")
    return parsed


def ensure_roles(server_url: str, urls: Mapping[str, str], *, own_server: bool) -> None:
    """Make each URL's user the login role that owns the URL's database and no other.

    Args:
        server_url: The server as a user that may create roles and databases.
        urls: Variable -> the URL a service connects with.
        own_server: The server is the stack's own: ``CONNECT`` on its ``postgres``
            database is revoked from ``PUBLIC`` as well.
    """
    for role in service_roles(server_url, urls).values():
        dbroles.ensure_owned_database(
            server_url,
            str(role.database),
            dbroles.DatabaseRole(str(role.username), str(role.password)),
        )
    if own_server:
        dbroles.close_default_database(server_url)


def reachable(url: str, databases: Iterable[str]) -> list[str]:
    """The databases among ``databases`` that ``url``'s user may connect to."""
    found = []
    for database in databases:
        engine = sa.create_engine(
            make_url(url).set(database=database),
            poolclass=NullPool,
            connect_args={"connect_timeout": 10},
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            found.append(database)
        except OperationalError:
            pass
        finally:
            engine.dispose()
    return found


def isolation_problems(
    urls: Mapping[str, str], probed: Iterable[str] = PROBED_DATABASES
) -> list[str]:
    """What is wrong with the roles of ``urls``: a role that misses its own database or
    reaches another one of ``probed``. Empty when each is isolated."""
    problems = []
    probed = list(probed)
    for var, url in urls.items():
        own = make_url(url).database
        reached = reachable(url, dict.fromkeys([str(own), *probed]))
        if own not in reached:
            problems.append(f"{var}: its role cannot connect to its own database {own}")
        if others := [database for database in reached if database != own]:
            problems.append(f"{var}: its role reaches {', '.join(others)} besides {own}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Create the roles (airflow-init) or, with ``--check``, test them; exit 1 on a fault."""
    parser = argparse.ArgumentParser(
        prog="python -m shipping.ops.compose_databases", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="test the roles of this container's URLs"
    )
    args = parser.parse_args(argv)
    urls = {var: os.environ[var] for var in SERVICE_URL_VARS if os.environ.get(var)}
    if args.check:
        problems = isolation_problems(urls) if urls else ["no service database URL is set"]
        for line in problems:
            print(f"refused: {line}", file=sys.stderr)  # noqa: T201 - a command's report
        if problems:
            return 1
        for var, url in urls.items():
            role = make_url(url)
            print(f"{var}: role {role.username} reaches {role.database} only")  # noqa: T201
        return 0
    missing = [var for var in (SERVER_URL_VAR, *SERVICE_URL_VARS) if not os.environ.get(var)]
    if missing:
        print(f"refused: {', '.join(missing)} not set", file=sys.stderr)  # noqa: T201
        return 1
    try:
        ensure_roles(os.environ[SERVER_URL_VAR], urls, own_server=True)
    except RoleSetupError as exc:
        print(f"refused: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    for role in service_roles(os.environ[SERVER_URL_VAR], urls).values():
        print(f"database {role.database}: owned by role {role.username}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
