"""Health checks and waits: the warehouse, Airflow, the broker and the Celery workers."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import requests

from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ops.stack.common import START_TIMEOUT_S, StackError, tail
from shipping.ops.state import StackState

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack

logger = logging.getLogger(__name__)


def wait_healthy(stack: Stack, state: StackState) -> None:
    """Return when every service answers its health check; raise StackError on a timeout."""
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = {"warehouse", "airflow"}
    workers = {s.name for s in stack.services() if s.name.startswith("worker-")}
    if state.executor == "celery":
        pending |= {"broker", *workers}
    while True:
        services = stack.services()
        if not services:
            raise StackError(f"supervisord is not running; see {stack.logs / 'supervisord.log'}")
        for service in services:
            if service.state == "FATAL":
                log = stack.logs / f"{service.name}.log"
                raise StackError(f"{service.name} keeps exiting; {log} ends with:\n{tail(log)}")
        if "warehouse" in pending and _healthy(f"{state.warehouse_url}/healthz"):
            pending.discard("warehouse")
        if "airflow" in pending and _airflow_healthy(state.airflow_url):
            pending.discard("airflow")
        if "broker" in pending and _redis_healthy(state.broker_url):
            pending.discard("broker")
        if "broker" not in pending and pending & workers:
            pending -= _workers_answering(state.broker_url)
        if not pending and all(s.running for s in services):
            return
        if time.monotonic() > deadline:
            down = sorted(pending | {s.name for s in services if not s.running})
            raise StackError(f"not healthy after {START_TIMEOUT_S:.0f} s: {down}")
        time.sleep(1)


def unpause(stack: Stack, state: StackState) -> None:
    """Make sure ``order_intake`` is known to the API server and unpaused."""
    from shipping.ops.airflow_api import AirflowClient

    with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
        deadline = time.monotonic() + 120
        while True:
            try:
                api.unpause(DAG_ID)
                return
            except (LookupError, requests.ConnectionError, requests.Timeout) as exc:
                # Not parsed yet, or an API server too busy to answer in time (a
                # loaded machine): ask again.
                if time.monotonic() > deadline:
                    raise StackError(
                        f"DAG {DAG_ID} could not be unpaused ({exc}); see the logs"
                    ) from None
                time.sleep(1)


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _airflow_healthy(base_url: str) -> bool:
    try:
        response = requests.get(f"{base_url}/api/v2/monitor/health", timeout=2)
        body = response.json()
    except (requests.RequestException, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return response.status_code == 200 and all(
        (body.get(p) or {}).get("status") == "healthy" for p in parts
    )


def _workers_answering(broker_url: str) -> set[str]:
    """The stack's workers that answer a Celery ping through the broker (ready for tasks)."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(timeout=1.0)
    except Exception:  # the broker is coming up or going down: nobody answers
        logger.debug("Celery ping failed", exc_info=True)
        return set()
    finally:
        app.close()
    return {name.partition("@")[0] for reply in replies for name in reply}


def _redis_healthy(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False
