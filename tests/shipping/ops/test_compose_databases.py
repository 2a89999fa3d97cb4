"""airflow-init's database roles for compose: made from the services' URLs, each isolated."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from shipping.ops import compose_databases, localpg
from shipping.ops.compose_databases import RoleSetupError


def _role_url(server_url: str, name: str) -> str:
    """A service URL on the test server: role and database ``name``, a fresh password."""
    url = make_url(server_url).set(username=name, password=f"pw-{uuid.uuid4().hex}")
    return url.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def service_urls(postgres_server_url: str) -> Iterator[dict[str, str]]:
    """Two service URLs (a ledger's and a warehouse's) whose roles and databases are
    dropped afterwards; nothing is created yet."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "SHIPPING_LEDGER_URL": f"c_ledger_{suffix}",
        "WAREHOUSE_DATABASE_URL": f"c_wh_{suffix}",
    }
    yield {var: _role_url(postgres_server_url, name) for var, name in names.items()}
    for name in names.values():
        localpg.drop_database(postgres_server_url, name)
        localpg.drop_role(postgres_server_url, name)


def _names(urls: dict[str, str]) -> list[str]:
    return [str(make_url(url).database) for url in urls.values()]


def test_each_service_url_gets_a_role_reaching_its_own_database_only(
    postgres_server_url: str, service_urls: dict[str, str]
) -> None:
    """After ensure_roles each URL connects to its database and is refused by the other's."""
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    assert compose_databases.isolation_problems(service_urls, _names(service_urls)) == []


def test_ensure_roles_is_idempotent(postgres_server_url: str, service_urls: dict[str, str]) -> None:
    """Running it on every `up` changes nothing the second time."""
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    assert compose_databases.isolation_problems(service_urls, _names(service_urls)) == []


def test_a_database_an_older_stack_made_as_the_superuser_is_handed_to_the_role(
    postgres_server_url: str, service_urls: dict[str, str]
) -> None:
    """An older volume's database and tables, owned by the superuser, become the role's."""
    ledger_url = service_urls["SHIPPING_LEDGER_URL"]
    name = str(make_url(ledger_url).database)
    engine = sa.create_engine(localpg.ensure_database(postgres_server_url, name))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE orders (id serial PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO orders (note) VALUES ('old')"))
    engine.dispose()
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    engine = sa.create_engine(ledger_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO orders (note) VALUES ('new')"))
            conn.execute(sa.text("ALTER TABLE orders ADD COLUMN extra text"))
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 2
    finally:
        engine.dispose()


def test_a_role_that_reaches_another_database_is_reported(
    postgres_server_url: str, service_urls: dict[str, str]
) -> None:
    """A database left open to PUBLIC is named as reached besides the role's own."""
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    open_name = f"c_open_{uuid.uuid4().hex[:8]}"
    localpg.ensure_database(postgres_server_url, open_name)
    try:
        problems = compose_databases.isolation_problems(
            service_urls, [*_names(service_urls), open_name]
        )
    finally:
        localpg.drop_database(postgres_server_url, open_name)
    assert len(problems) == 2
    assert all(f"reaches {open_name} besides" in problem for problem in problems)


def test_a_wrong_password_is_reported_as_not_reaching_its_own_database(
    postgres_server_url: str, service_urls: dict[str, str]
) -> None:
    """A URL whose role cannot log in fails the check, naming its own database."""
    compose_databases.ensure_roles(postgres_server_url, service_urls, own_server=False)
    wrong = make_url(service_urls["SHIPPING_LEDGER_URL"]).set(password="not-the-password")
    urls = {"SHIPPING_LEDGER_URL": wrong.render_as_string(hide_password=False)}
    (problem,) = compose_databases.isolation_problems(urls, _names(service_urls))
    assert "cannot connect to its own database" in problem


SERVER = "postgresql+psycopg2://shipping:pw-of-the-superuser@postgres:5432/postgres"


@pytest.mark.parametrize(
    ("urls", "reason"),
    [
        ({"A": "postgresql+psycopg2://shipping:pw@postgres/airflow"}, "as the superuser"),
        ({"A": "postgresql+psycopg2://airflow@postgres/airflow"}, "no user, password"),
        (
            {
                "A": "postgresql+psycopg2://same:pw1@postgres/one",
                "B": "postgresql+psycopg2://same:pw2@postgres/two",
            },
            "share a username",
        ),
        (
            {
                "A": "postgresql+psycopg2://one:pw1@postgres/db",
                "B": "postgresql+psycopg2://two:pw2@postgres/db",
            },
            "share a database",
        ),
    ],
)
def test_urls_that_cannot_have_roles_of_their_own_are_refused(
    urls: dict[str, str], reason: str
) -> None:
    """The superuser as a service, a missing password or a shared role or database is
    refused before anything is created (the superuser would lose its powers)."""
    with pytest.raises(RoleSetupError, match=reason):
        compose_databases.service_roles(SERVER, urls)


def test_without_the_server_url_nothing_is_created(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """airflow-init's step exits 1 naming what is missing, printing no password."""
    monkeypatch.delenv(compose_databases.SERVER_URL_VAR, raising=False)
    monkeypatch.setenv("SHIPPING_LEDGER_URL", "postgresql+psycopg2://l:secret-pw@h/l")
    assert compose_databases.main([]) == 1
    err = capsys.readouterr().err
    assert compose_databases.SERVER_URL_VAR in err
    assert "secret-pw" not in err
