"""Each service of the running stack connects as its own database role, which reaches
its own database only (docs/security.md), on the session's stack."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from shipping.contract import AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE
from shipping.ops.stack import Stack
from tests.e2e.conftest import LiveStack

pytestmark = pytest.mark.e2e


def connects(url: sa.URL) -> bool:
    """Whether a connection to ``url`` is accepted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT 1")).scalar() == 1)
    except OperationalError:
        return False
    finally:
        engine.dispose()


def test_each_service_is_configured_with_its_own_role(stack: LiveStack) -> None:
    """Airflow's metadata, the tasks' ledger connection and the warehouse each name the
    role of their own database, never the server's superuser."""
    prefix = stack.env["SHIPPING_DATABASE_PREFIX"]
    run = Stack(env=stack.env, echo=lambda _: None).supervisor.run_dir
    airflow = json.loads((run / "airflow.env.json").read_text())
    warehouse = json.loads((run / "warehouse.env.json").read_text())
    ledger = json.loads(airflow["AIRFLOW_CONN_SHIPPING_LEDGER"])
    assert stack.state.database_roles is True
    assert make_url(airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).username == (
        prefix + AIRFLOW_DATABASE
    )
    assert make_url(warehouse["WAREHOUSE_DATABASE_URL"]).username == prefix + WAREHOUSE_DATABASE
    assert ledger["login"] == prefix + LEDGER_DATABASE
    assert make_url(stack.state.ledger_url).username == prefix + LEDGER_DATABASE


def test_the_running_services_hold_connections_as_their_roles_only(stack: LiveStack) -> None:
    """On the server, every connection to a stack database is its own role's."""
    prefix = stack.env["SHIPPING_DATABASE_PREFIX"]
    engine = sa.create_engine(stack.state.postgres_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT DISTINCT datname, usename FROM pg_stat_activity "
                    "WHERE datname IN (:airflow, :warehouse)"
                ),
                {"airflow": prefix + AIRFLOW_DATABASE, "warehouse": prefix + WAREHOUSE_DATABASE},
            ).all()
    finally:
        engine.dispose()
    assert rows, "no service is connected to its database"
    assert all(database == user for database, user in rows), rows


def test_the_ledger_role_cannot_open_the_warehouse_or_airflow_database(stack: LiveStack) -> None:
    """The ledger's credentials (which every task holds) reach the ledger alone."""
    prefix = stack.env["SHIPPING_DATABASE_PREFIX"]
    ledger = make_url(stack.state.ledger_url)
    assert connects(ledger)
    assert not connects(ledger.set(database=prefix + WAREHOUSE_DATABASE))
    assert not connects(ledger.set(database=prefix + AIRFLOW_DATABASE))
    warehouse = make_url(stack.state.warehouse_database_url)
    assert not connects(warehouse.set(database=prefix + LEDGER_DATABASE))
