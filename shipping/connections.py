"""Airflow Connections become a warehouse client and a ledger URL here, in one place.

Works on anything shaped like ``airflow.sdk.Connection`` (``conn_type``, ``host``,
``port``, ``login``, ``password``, ``schema``, ``extra_dejson``), so this module imports
without Airflow. Bad configuration fails early and names the connection and the field.
"""

from __future__ import annotations

from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from sqlalchemy.engine import URL, make_url

from shipping.errors import ConnectionConfigError
from shipping.warehouse import WarehouseClient

#: The one token the pipeline and the ``shipping`` command send to the warehouse.
TOKEN_VAR: Final = "WAREHOUSE_API_TOKEN"
#: The tokens the warehouse accepts (comma-separated; ``TOKEN_VAR`` when unset).
TOKENS_VAR: Final = "WAREHOUSE_API_TOKENS"


class ConnectionLike(Protocol):
    """The fields of an Airflow Connection this module reads."""

    conn_id: str | None
    conn_type: str | None
    host: str | None
    port: int | None
    login: str | None
    password: str | None
    schema: str | None

    @property
    def extra_dejson(self) -> dict[str, Any]: ...


def warehouse_client(conn: ConnectionLike, **kwargs: Any) -> WarehouseClient:
    """A warehouse client from an ``http`` connection (password = client token).

    The connection's ``schema`` is the URL scheme (``http`` unless set), as in Airflow's
    HTTP provider. ``kwargs`` go to :class:`~shipping.warehouse.WarehouseClient`.
    """
    if not conn.host:
        raise ConnectionConfigError(f"connection {conn.conn_id!r}: host is not set")
    if not conn.password:
        raise ConnectionConfigError(
            f"connection {conn.conn_id!r}: password (the API token) is not set"
        )
    single_token(conn.password, source=f"connection {conn.conn_id!r}: password (the API token)")
    scheme = conn.schema or "http"
    if scheme not in ("http", "https"):
        raise ConnectionConfigError(f"connection {conn.conn_id!r}: schema must be http or https")
    host = conn.host
    if "://" in host:  # a host written as a URL
        base_url = host.rstrip("/")
    else:
        base_url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    return WarehouseClient(base_url, conn.password, **kwargs)


def single_token(token: str, *, source: str = TOKEN_VAR) -> str:
    """``token`` if it is one bearer token; a comma-separated list is refused.

    A client sends exactly one token. The list the warehouse accepts (``NEW,OLD`` while
    rotating) is :data:`TOKENS_VAR`, a setting of the warehouse alone: sent as one bearer,
    a list fails every call with an authentication error.

    Raises:
        ConnectionConfigError: ``token`` holds a comma; the message names ``source`` and
            :data:`TOKENS_VAR`.
    """
    if "," in token:
        raise ConnectionConfigError(
            f"{source} holds a comma: a client sends ONE token. List the tokens the "
            f"warehouse accepts (NEW,OLD while rotating) in {TOKENS_VAR}, and set "
            f"{TOKEN_VAR} to the one token the pipeline sends"
        )
    return token


def ledger_url(conn: ConnectionLike) -> str:
    """A SQLAlchemy URL from a ``postgres`` (or, for tests, ``sqlite``) connection.

    A ``host`` that starts with ``/`` is a Unix socket folder, as psycopg2 understands it.
    """
    if conn.conn_type == "sqlite":
        if not conn.host:
            raise ConnectionConfigError(f"connection {conn.conn_id!r}: host (the file) is not set")
        return f"sqlite:///{conn.host}"
    if conn.conn_type not in ("postgres", "postgresql"):
        raise ConnectionConfigError(
            f"connection {conn.conn_id!r}: conn_type must be postgres, got {conn.conn_type!r}"
        )
    if not conn.schema:
        raise ConnectionConfigError(
            f"connection {conn.conn_id!r}: schema (the database) is not set"
        )
    query: dict[str, str] = {}
    host = conn.host or None
    if host and host.startswith("/"):
        query["host"] = host
        host = None
    url = URL.create(
        "postgresql+psycopg2",
        username=conn.login or None,
        password=conn.password or None,
        host=host,
        port=conn.port if host else None,
        database=conn.schema,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def warehouse_connection(base_url: str, token: str) -> dict[str, Any]:
    """The ``AIRFLOW_CONN_...`` JSON of an ``http`` connection to the warehouse at ``base_url``.

    The inverse of :func:`warehouse_client`.

    Raises:
        ConnectionConfigError: ``token`` is a list (see :func:`single_token`).
    """
    single_token(token)
    parts = urlsplit(base_url)
    return {
        "conn_type": "http",
        "schema": parts.scheme,
        "host": parts.hostname,
        "port": parts.port,
        "password": token,
    }


def ledger_connection(url: str) -> dict[str, Any]:
    """The ``AIRFLOW_CONN_...`` JSON of a ``postgres`` connection to the ledger at ``url``.

    The inverse of :func:`ledger_url`; a Unix socket folder (``?host=/dir``) becomes the host.
    """
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host")
    return {
        "conn_type": "postgres",
        "host": host if isinstance(host, str) else None,
        "port": parsed.port,
        "login": parsed.username,
        "password": parsed.password,
        "schema": parsed.database,
    }
