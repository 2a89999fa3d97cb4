"""uvicorn's HTTP protocol with a deadline on the request head (slowloris).

uvicorn (0.54) has no setting for a client that never finishes its request head:
``timeout_keep_alive`` runs only between requests, once a response is complete, and a
fresh connection or a half-sent request line and headers are held open for as long as
the client likes. A few dozen such connections cost the client nothing and hold a file
descriptor and a parser each on the server, until it runs out of them.

:func:`head_timeout_protocol` gives uvicorn (``Config(http=...)``) its own httptools
protocol with one timer more: armed when a connection opens and when the first byte of
each request arrives, cancelled when the head (request line and headers) is complete.
When it fires the server answers ``408 Request Timeout`` and closes the connection. The
deadline is absolute, so a client trickling a byte now and then is cut off too. The body
and the time the application takes are not covered: the body is bounded by the app
(413 past its limit) and read only once the route asks for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 34\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request head not received in time."
)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head stalls.

    Subclasses set :attr:`head_timeout` (see :func:`head_timeout_protocol`).
    """

    #: Seconds from a connection's opening, or a request's first byte, to its last header.
    head_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        logger.warning(
            "closing a connection from %s: no complete request head after %.1f s",
            f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client",
            self.head_timeout,
        )
        self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's head."""
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        """A request's first byte arrived: its head has :attr:`head_timeout` seconds."""
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        """The head is complete: the app (and its body limit) takes over."""
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the timer of a connection that is gone."""
        self._cancel_head_timer()
        super().connection_lost(exc)


def head_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``) for a head deadline.

    Args:
        seconds: How long a client may take to send a request's line and headers,
            counted from the connection's opening or the request's first byte.
    """

    class _Protocol(HeadTimeoutProtocol):
        head_timeout = seconds

    return _Protocol
