"""Another host on this machine: a network namespace joined to it by a veth pair.

A process started with :meth:`OtherHost.spawn` has its own network stack (its own
loopback, one address on the veth link) and its own mount namespace in which chosen
folders are hidden under empty tmpfs mounts (a Unix socket is a file: without hiding
its folder a namespace could still reach a server through it). It reaches this machine
only at :attr:`OtherHost.gateway`, and there only the ports a :class:`Forwarder` serves.

Needs Linux, root, ``ip`` (iproute2) and ``unshare`` (util-linux).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def unavailable() -> str | None:
    """Why another host cannot be made here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2 / util-linux)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class OtherHost:
    """A network namespace with one veth link to this machine."""

    name: str
    gateway: str  # this machine's address on the link
    address: str  # the namespace's own address
    hidden: list[Path] = field(default_factory=list)

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace, in a mount namespace hiding :attr:`hidden`."""
        mounts = "".join(f"mount -t tmpfs tmpfs {_quote(p)} && " for p in self.hidden)
        return [
            *("ip", "netns", "exec", self.name),
            *("unshare", "--mount", "--propagation", "private"),
            *("sh", "-c", f'{mounts}exec "$@"', "sh", *argv),
        ]

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` there, in a session of its own, its output appended to ``log``."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.command(argv),
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` there and wait for it."""
        return subprocess.run(
            self.command(argv),
            env=dict(env),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


@contextlib.contextmanager
def other_host(hidden: Sequence[Path] = ()) -> Iterator[OtherHost]:
    """A fresh namespace and link (10.213.x.1 here, 10.213.x.2 there), removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    name, here, there = f"ship-{tag}", f"vsh{tag}", f"vsn{tag}"
    subnet = random.randrange(1, 250)
    gateway, address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{gateway}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", name, "addr", "add", f"{address}/30", "dev", there)
        _ip("-n", name, "link", "set", there, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield OtherHost(name, gateway, address, list(hidden))
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "delete", here)
        _ip("netns", "delete", name)


class Forwarder:
    """Serve one TCP port on ``listen`` and pipe each connection to ``target``.

    ``target`` is ``(host, port)`` or the path of a Unix socket. It stands for the network
    between two machines: only what is forwarded is reachable from the other host.
    """

    def __init__(self, listen: str, target: tuple[str, int] | Path) -> None:
        self.target = target
        self.server = socket.create_server((listen, 0))
        self.port = self.server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, Path):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            return upstream
        return socket.create_connection(self.target)

    def _serve(self) -> None:
        self.server.settimeout(0.5)
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            client.close()
            return
        with client, upstream:
            ends = [client, upstream]
            while not self._stop.is_set():
                readable, _, _ = select.select(ends, [], [], 0.5)
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is client else client).sendall(data)

    def close(self) -> None:
        """Stop accepting and end every piped connection."""
        self._stop.set()
        self.server.close()
        self._thread.join(timeout=5)
