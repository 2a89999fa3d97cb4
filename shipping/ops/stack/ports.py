"""The TCP ports the local stack listens on, all on 127.0.0.1, and whether one is taken."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from shipping.contract import AIRFLOW_PORT, WAREHOUSE_PORT
from shipping.ops.stack.common import HOST, StackError

#: Airflow's scheduler health check server (its own default port, moved with the stack).
SCHEDULER_HEALTH_PORT = 8974
#: The stack's own Redis in Celery mode (beside the health check; moves with the stack).
REDIS_PORT = 8975


@dataclass(frozen=True)
class Ports:
    """The TCP ports the stack listens on (all on 127.0.0.1).

    Airflow's log servers (8793, 8794) are not among them: they bind every interface
    (hard-coded in 3.3.2), and on one machine the UI reads task logs from the shared log
    folder, so the stack starts the scheduler and triggerer with ``--skip-serve-logs``.
    """

    airflow: int = AIRFLOW_PORT
    warehouse: int = WAREHOUSE_PORT
    # Move with the Airflow port, so that two stacks do not collide.
    scheduler_health: int = SCHEDULER_HEALTH_PORT
    redis: int = REDIS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Ports from ``SHIPPING_AIRFLOW_PORT`` / ``SHIPPING_WAREHOUSE_PORT`` (tests move them)."""
        airflow = _port(env, "SHIPPING_AIRFLOW_PORT", AIRFLOW_PORT)
        warehouse = _port(env, "SHIPPING_WAREHOUSE_PORT", WAREHOUSE_PORT)
        health = SCHEDULER_HEALTH_PORT + airflow - AIRFLOW_PORT
        redis = REDIS_PORT + airflow - AIRFLOW_PORT
        if not 1024 <= health <= redis <= 65535:
            raise StackError(
                f"SHIPPING_AIRFLOW_PORT={airflow} puts the scheduler's health check and "
                f"Redis on {health} and {redis}, outside 1024-65535; choose a port below "
                f"{65535 - (REDIS_PORT - AIRFLOW_PORT)}"
            )
        return cls(airflow, warehouse, health, redis)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise StackError(f"{name} must be a port number 1024-65535, got {raw!r}")
    return int(raw)


def port_open(port: int) -> bool:
    """Whether something listens on ``port`` on the stack's host."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0
