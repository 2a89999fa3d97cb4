"""The warehouse drops clients that stall in their request head (slowloris), over real
sockets against ``python -m warehouse_mock``, while it keeps answering everyone else."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.warehouse_mock.support import WarehouseProcess

HEAD_TIMEOUT_S = 1.0
#: What a stalled client may wait beyond the deadline on a loaded machine.
SLACK_S = 10.0
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(scope="module")
def warehouse_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarehouseProcess]:
    """The real warehouse process with a 1 s request-head deadline (one for the module)."""
    process = WarehouseProcess(
        {
            "WAREHOUSE_API_TOKEN": "client-token-stall",
            "WAREHOUSE_ADMIN_TOKEN": "admin-token-stall",
            "WAREHOUSE_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_S),
        },
        tmp_path_factory.mktemp("stalled"),
        "stalled",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def connect(process: WarehouseProcess, first_bytes: bytes) -> socket.socket:
    """A client connection that has sent ``first_bytes`` and nothing more."""
    sock = socket.create_connection(("127.0.0.1", process.port), timeout=5)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection.

    Raises:
        AssertionError: The connection is still open at ``deadline``.
    """
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            raise AssertionError(
                f"the connection is still open at the deadline; got {received!r}"
            ) from None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and a ``content-length`` body) from a kept-alive connection."""
    sock.settimeout(5)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    assert len(body) == length, received
    return head


def test_forty_stalled_heads_are_dropped_after_the_timeout_while_healthz_answers(
    warehouse_process: WarehouseProcess,
) -> None:
    """40 clients that never finish their headers are answered 408 and disconnected after
    the deadline; /healthz answers at once meanwhile."""
    started = time.monotonic()
    stalled = [connect(warehouse_process, PARTIAL_HEAD) for _ in range(40)]
    try:
        answer = requests.get(f"{warehouse_process.base_url}/healthz", timeout=5)
        assert answer.status_code == 200
        for sock in stalled:
            received = read_until_closed(sock, started + HEAD_TIMEOUT_S + SLACK_S)
            assert received.startswith(b"HTTP/1.1 408 "), received
        assert time.monotonic() - started >= HEAD_TIMEOUT_S
        assert requests.get(f"{warehouse_process.base_url}/healthz", timeout=5).status_code == 200
    finally:
        for sock in stalled:
            sock.close()
    assert "no complete request head after 1.0 s" in warehouse_process.log()


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
    warehouse_process: WarehouseProcess,
) -> None:
    """A client that connects and stays silent does not hold its connection."""
    started = time.monotonic()
    with connect(warehouse_process, b"") as sock:
        read_until_closed(sock, started + HEAD_TIMEOUT_S + SLACK_S)


def test_a_client_trickling_its_head_is_cut_off_at_the_deadline(
    warehouse_process: WarehouseProcess,
) -> None:
    """The deadline counts from the request's start: a byte now and then does not extend it."""
    started = time.monotonic()
    with connect(warehouse_process, b"G") as sock:
        closed = False
        for (
            byte
        ) in b"ET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
            time.sleep(0.2)
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if time.monotonic() - started > HEAD_TIMEOUT_S + SLACK_S:
                break
        if not closed:
            received = read_until_closed(sock, time.monotonic() + 1)
            assert received.startswith(b"HTTP/1.1 408 "), received
        assert time.monotonic() - started < HEAD_TIMEOUT_S + SLACK_S


def test_a_keep_alive_connection_serves_several_requests_and_its_next_head_is_timed_too(
    warehouse_process: WarehouseProcess,
) -> None:
    """Complete requests are served on one connection; a stalled second head is dropped."""
    with connect(warehouse_process, b"") as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(HEAD_TIMEOUT_S * 0.6)  # together longer than one deadline
        started = time.monotonic()
        sock.sendall(PARTIAL_HEAD)
        received = read_until_closed(sock, started + HEAD_TIMEOUT_S + SLACK_S)
        assert received.startswith(b"HTTP/1.1 408 "), received
