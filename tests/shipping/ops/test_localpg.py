"""Tests for the embedded PostgreSQL helper."""

import sqlalchemy as sa

from shipping.ops import localpg


def test_fresh_database_is_real_postgresql(postgres_url: str) -> None:
    """The per-test database is a PostgreSQL server that answers queries."""
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version()")).scalar().startswith("PostgreSQL")
    engine.dispose()


def test_ensure_database_is_idempotent(postgres_server_url: str) -> None:
    """Creating a database that exists leaves it in place and returns the same URL."""
    first = localpg.ensure_database(postgres_server_url, "test_idem_db")
    second = localpg.ensure_database(postgres_server_url, "test_idem_db")
    assert first == second
    localpg.drop_database(postgres_server_url, "test_idem_db")
