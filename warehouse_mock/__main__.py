"""Run the warehouse: ``python -m warehouse_mock [--host H] [--port P]``.

Settings come from the environment (see :mod:`warehouse_mock.settings`); one process,
one uvicorn worker. A line ``warehouse_mock ready on http://H:P`` is logged once the
socket accepts requests. Exit codes: 0 after serving, 2 for invalid settings, 3 when
start-up fails (the database cannot be migrated, or rows of retired tokens need
``WAREHOUSE_RETIRED_TOKENS``: the log says which).
"""

from __future__ import annotations

import argparse
import logging
import socket
from collections.abc import Sequence

import uvicorn

from warehouse_mock.app import create_app
from warehouse_mock.protocol import head_timeout_protocol
from warehouse_mock.settings import Settings, SettingsError

logger = logging.getLogger("warehouse_mock")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
EXIT_CONFIG_ERROR = 2
EXIT_STARTUP_FAILED = 3


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is ready, with the port it really listens on."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        logger.info("warehouse_mock ready on http://%s:%d (docs at /docs)", host, port)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, check the settings and serve until interrupted.

    Returns:
        The process exit code: 0, 2 when the settings are invalid, 3 when start-up
        failed.
    """
    parser = argparse.ArgumentParser(
        prog="python -m warehouse_mock", description="Run the mock warehouse HTTP service."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except SettingsError as exc:
        logger.error("invalid settings: %s", exc)
        return EXIT_CONFIG_ERROR

    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        workers=1,
        # A client that stalls in its request head is answered 408 and dropped.
        http=head_timeout_protocol(settings.header_timeout_seconds),
        log_config=None,  # our basicConfig above formats uvicorn's records too
        log_level=args.log_level,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else EXIT_STARTUP_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
