"""What every part of the local stack shares: its error, its address and its timings."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from shipping.contract import WAREHOUSE_POOL, WAREHOUSE_POOL_SLOTS

HOST = "127.0.0.1"
#: The Airflow services ``up`` starts, in start order.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Pools the stack creates before the first run (a task in a missing pool never runs).
BOOTSTRAP_POOLS: Mapping[str, int] = {WAREHOUSE_POOL: WAREHOUSE_POOL_SLOTS}
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
#: How long a worker stopped on purpose may take to finish the lines it runs (Celery's warm
#: shutdown) before supervisord kills it.
WORKER_STOP_WAIT_S = 300


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why and where to look."""


def set_or_drop(env: dict[str, str], name: str, value: str | None) -> None:
    """Set ``name`` in ``env``, or remove it when ``value`` is None."""
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value


def tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log file, for an error message."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
