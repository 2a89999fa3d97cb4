"""A real warehouse server in a thread, for tests (this project's and the client's).

:func:`serve_warehouse` runs :func:`~warehouse_mock.app.create_app` under uvicorn on a
free 127.0.0.1 port and yields a :class:`WarehouseHandle` with the URL, the tokens and a
few admin helpers. No test double: the tests talk HTTP to the real app and database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import requests
import uvicorn

from warehouse_mock.app import create_app
from warehouse_mock.service import Clock, utc_now
from warehouse_mock.settings import Settings

HTTP_TIMEOUT_SECONDS: Final = 10.0
STARTUP_TIMEOUT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class WarehouseHandle:
    """A running warehouse and what a test needs to talk to it.

    Attributes:
        base_url: ``http://127.0.0.1:<port>``, without a trailing slash.
        api_token: A client token.
        admin_token: The admin token.
        database_url: The server's database (for tests that look behind the API).
        rotated_api_token: A second token of the same client (as during a rotation),
            when the server has one.
        foreign_api_token: A token of another client, when the server has one.
    """

    base_url: str
    api_token: str
    admin_token: str
    database_url: str
    rotated_api_token: str | None = None
    foreign_api_token: str | None = None

    def _admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(
            method,
            f"{self.base_url}{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=HTTP_TIMEOUT_SECONDS,
            **kwargs,
        )
        response.raise_for_status()
        return response

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Replace the fault configuration (``PUT /_admin/faults``); returns it."""
        result: dict[str, Any] = self._admin("PUT", "/_admin/faults", json=fields).json()
        return result

    def get_faults(self) -> dict[str, Any]:
        """The fault configuration in force."""
        result: dict[str, Any] = self._admin("GET", "/_admin/faults").json()
        return result

    def clear_faults(self) -> None:
        """Turn every fault off (``DELETE /_admin/faults``)."""
        self._admin("DELETE", "/_admin/faults")

    def shipments(self, order_id: str) -> list[dict[str, Any]]:
        """Every client's shipments of ``order_id`` (``GET /v1/shipments?order_id=...``
        with the admin token)."""
        result: list[dict[str, Any]] = self._admin(
            "GET", "/v1/shipments", params={"order_id": order_id}
        ).json()["shipments"]
        return result


@contextmanager
def serve_in_thread(app: Any, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn in a daemon thread; yield its base URL.

    The socket is bound before the server starts, so the port is known and cannot be
    taken by someone else in between.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,  # leave the test runner's logging alone
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"warehouse-{port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the warehouse server did not start")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_SECONDS)
        sock.close()


@contextmanager
def serve_warehouse(settings: Settings, *, clock: Clock = utc_now) -> Iterator[WarehouseHandle]:
    """Run a warehouse for ``settings`` in a thread; yield its handle.

    Args:
        settings: The server's settings; the first token of the client ``default``
            becomes ``api_token``, its second (if any) ``rotated_api_token``, the first
            token of another client (if any) ``foreign_api_token``.
        clock: Source of the current time for the server.
    """
    api_tokens = [token.get_secret_value() for token in settings.api_tokens]
    foreign = [tokens[0].get_secret_value() for tokens in settings.other_clients.values()]
    with serve_in_thread(create_app(settings, clock=clock)) as base_url:
        yield WarehouseHandle(
            base_url=base_url,
            api_token=api_tokens[0],
            admin_token=settings.admin_token.get_secret_value(),
            database_url=settings.database_url,
            rotated_api_token=api_tokens[1] if len(api_tokens) > 1 else None,
            foreign_api_token=foreign[0] if foreign else None,
        )
