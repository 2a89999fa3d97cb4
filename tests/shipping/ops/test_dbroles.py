"""The stack's databases with a role each, on a real PostgreSQL server."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shipping.contract import AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE
from shipping.ops import dbroles, localpg

NAMES = (AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE)


def connects(url: str) -> bool:
    """Whether a connection to ``url`` is accepted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT 1")).scalar() == 1)
    except OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def prefix(postgres_server_url: str) -> Iterator[str]:
    """A unique database prefix; its databases and roles are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    yield prefix
    for name in NAMES:
        localpg.drop_database(postgres_server_url, prefix + name)
        localpg.drop_role(postgres_server_url, prefix + name)


def test_each_service_database_gets_its_own_role_and_no_other(
    postgres_server_url: str, prefix: str, tmp_path: Path
) -> None:
    """Airflow's, the ledger's and the warehouse's URLs are their own roles', and no role
    reaches another's database."""
    made = dbroles.ensure_service_databases(postgres_server_url, tmp_path, NAMES, prefix=prefix)
    assert made.roles
    for name, url in made.urls.items():
        parsed = make_url(url)
        assert (parsed.username, parsed.database) == (prefix + name, prefix + name)
        assert connects(url)
        for other in NAMES:
            if other != name:
                assert not connects(parsed.set(database=prefix + other).render_as_string(False))


def test_the_role_passwords_are_kept_private_and_reused(
    postgres_server_url: str, prefix: str, tmp_path: Path
) -> None:
    """database-roles.json (0600) keeps each password; a second start gives the same URLs."""
    first = dbroles.ensure_service_databases(postgres_server_url, tmp_path, NAMES, prefix=prefix)
    path = tmp_path / dbroles.ROLES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert set(kept) == {prefix + name for name in NAMES}
    again = dbroles.ensure_service_databases(postgres_server_url, tmp_path, NAMES, prefix=prefix)
    assert again.urls == first.urls


def test_a_server_user_that_may_not_create_roles_serves_every_database(
    postgres_server_url: str, prefix: str, tmp_path: Path
) -> None:
    """A SHIPPING_POSTGRES_URL of a user with CREATEDB but not CREATEROLE: the stack runs
    as that user for all three databases, as before roles."""
    plain = f"{prefix}plain"
    engine = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {plain} LOGIN CREATEDB PASSWORD 'pw-plain-123'")
    engine.dispose()
    url = make_url(postgres_server_url).set(username=plain, password="pw-plain-123")
    try:
        made = dbroles.ensure_service_databases(
            url.render_as_string(hide_password=False), tmp_path, NAMES, prefix=prefix
        )
        assert not made.roles
        assert {make_url(u).username for u in made.urls.values()} == {plain}
        assert all(connects(u) for u in made.urls.values())
    finally:
        for name in NAMES:
            localpg.drop_database(postgres_server_url, prefix + name)
        localpg.drop_role(postgres_server_url, plain)
