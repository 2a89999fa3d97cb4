"""Airflow Connections become a warehouse client and a ledger URL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from shipping.connections import (
    ledger_connection,
    ledger_url,
    warehouse_client,
    warehouse_connection,
)
from shipping.errors import ConnectionConfigError


@dataclass
class Conn:
    """The fields of an Airflow Connection that matter here."""

    conn_type: str | None = "http"
    host: str | None = "127.0.0.1"
    port: int | None = 8081
    login: str | None = None
    password: str | None = "client-token-123"
    schema: str | None = None
    conn_id: str | None = "test_conn"
    extra_dejson: dict[str, Any] = field(default_factory=dict)


def test_http_connection_becomes_a_client_of_its_host_and_port() -> None:
    """host, port and the default http scheme make the base URL; password is the token."""
    with warehouse_client(Conn()) as client:
        assert client.base_url == "http://127.0.0.1:8081"


def test_host_written_as_a_url_is_used_as_is() -> None:
    """A host like https://warehouse.example is the base URL."""
    with warehouse_client(Conn(host="https://warehouse.example/", port=None)) as client:
        assert client.base_url == "https://warehouse.example"


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (Conn(host=None), "host is not set"),
        (Conn(password=None), "password"),
        (Conn(schema="ftp"), "schema must be http or https"),
    ],
)
def test_bad_warehouse_connection_names_the_field(conn: Conn, message: str) -> None:
    """A misconfigured connection fails early, naming the connection and the field."""
    with pytest.raises(ConnectionConfigError, match=f"test_conn.*{message}"):
        warehouse_client(conn)


def test_postgres_connection_becomes_a_psycopg2_url() -> None:
    """A TCP PostgreSQL connection keeps host, port, user, password and database."""
    url = make_url(
        ledger_url(
            Conn(conn_type="postgres", host="db", port=5432, login="u", password="p", schema="l")
        )
    )
    assert (url.drivername, url.host, url.port, url.username, url.password, url.database) == (
        "postgresql+psycopg2",
        "db",
        5432,
        "u",
        "p",
        "l",
    )


def test_postgres_socket_folder_goes_into_the_query() -> None:
    """A host starting with / is a Unix socket folder, as psycopg2 wants it."""
    url = make_url(
        ledger_url(Conn(conn_type="postgres", host="/run/pg", port=None, password=None, schema="l"))
    )
    assert url.host is None
    assert url.query["host"] == "/run/pg"


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        (Conn(conn_type="mysql", schema="l"), "conn_type must be postgres"),
        (Conn(conn_type="postgres", schema=None), "schema \\(the database\\) is not set"),
    ],
)
def test_bad_ledger_connection_names_the_field(conn: Conn, message: str) -> None:
    """Only postgres (and sqlite for tests) ledgers; the database must be named."""
    with pytest.raises(ConnectionConfigError, match=message):
        ledger_url(conn)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://u:p@db:5432/ledger",
        "postgresql+psycopg2://postgres@/ledger?host=/run/pg",
    ],
)
def test_ledger_connection_round_trips_to_the_same_url(url: str) -> None:
    """The connection the stack hands Airflow gives the tasks back the ledger's URL."""
    conn = Conn(**{"conn_id": "c", **ledger_connection(url)})
    assert make_url(ledger_url(conn)) == make_url(url)


def test_warehouse_connection_round_trips_to_the_same_base_url() -> None:
    """The connection the stack hands Airflow gives the tasks back the warehouse's URL."""
    conn = Conn(**{"conn_id": "c", **warehouse_connection("http://127.0.0.1:8081", "tok-123456")})
    with warehouse_client(conn) as client:
        assert client.base_url == "http://127.0.0.1:8081"


def test_a_connection_holding_a_token_list_is_refused_naming_the_accepted_tokens() -> None:
    """A password "NEW,OLD" would be sent as one bearer: refused, naming WAREHOUSE_API_TOKENS."""
    with pytest.raises(ConnectionConfigError, match="WAREHOUSE_API_TOKENS") as refused:
        warehouse_client(Conn(password="new-token-123,old-token-456"))
    assert "'test_conn'" in str(refused.value)


def test_a_connection_is_not_built_from_a_token_list() -> None:
    """The stack's AIRFLOW_CONN_WAREHOUSE_API is never built from "NEW,OLD"."""
    with pytest.raises(ConnectionConfigError, match="WAREHOUSE_API_TOKENS"):
        warehouse_connection("http://127.0.0.1:8081", "new-token-123,old-token-456")
