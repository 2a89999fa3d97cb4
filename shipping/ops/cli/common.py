"""What the ``shipping`` commands share: exit codes, the connections, an order's intake.

With the local stack up (``make up``) no settings are needed: the commands read the
stack's state. Otherwise ``SHIPPING_AIRFLOW_URL`` and ``AIRFLOW_ADMIN_PASSWORD`` (Airflow),
``SHIPPING_LEDGER_URL`` (the ledger), ``SHIPPING_WAREHOUSE_URL`` and ``WAREHOUSE_API_TOKEN``
(the warehouse) say where to go.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shipping import errors
from shipping.advice import (
    AWAITING_INPUT,
    DECIDE_TASK,
    DONE_LINE_STATES,
    FAILED_TI_STATES,
    INTAKE_TASK,
    REDUCER_TASK,
    SHIP_TASK,
    WAREHOUSE_CONN_VAR,
    all_done,
)
from shipping.connections import TOKEN_VAR
from shipping.contract import DAG_ID
from shipping.ops.airflow_api import AirflowClient
from shipping.ops.settings import ClientSettings
from shipping.ops.state import load_state
from shipping.order import run_id_for

__all__ = [  # the task names and states of shipping.advice, as the commands use them
    "AWAITING_INPUT",
    "DECIDE_TASK",
    "DONE_LINE_STATES",
    "FAILED_TI_STATES",
    "INTAKE_TASK",
    "REDUCER_TASK",
    "SHIP_TASK",
    "WAREHOUSE_CONN_VAR",
    "all_done",
]

EXIT_OK, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_OPERATOR, EXIT_DRIFT_OR_TIMEOUT = 0, 1, 2, 3, 4
#: What a shell reports for a command whose reader went away (128 + SIGPIPE).
EXIT_READER_GONE = 141
WATCH_POLL_S = 2.0


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------- connections
def open_airflow() -> AirflowClient:
    """Airflow's REST client, from the environment or the running stack's state."""
    state = load_state()
    env = dict(os.environ)
    if state is not None and "SHIPPING_AIRFLOW_URL" not in env:
        env["SHIPPING_AIRFLOW_URL"] = state.airflow_url
    settings = ClientSettings.from_env(
        env, fallback_password=state.admin_password if state else None
    )
    try:
        return AirflowClient(settings.airflow_url, settings.username, settings.password)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def ledger_url() -> str:
    """The ledger's URL: ``SHIPPING_LEDGER_URL``, else the running stack's."""
    url = os.environ.get("SHIPPING_LEDGER_URL")
    if url:
        return url
    state = load_state()
    if state is None:
        raise CliError("no ledger: set SHIPPING_LEDGER_URL or start the stack (make up)")
    return state.ledger_url


@contextmanager
def open_ledger() -> Iterator[Any]:
    """The ledger, disposed of on exit."""
    from shipping.ledger import Ledger

    ledger = Ledger.from_url(ledger_url())
    try:
        yield ledger
    finally:
        ledger.dispose()


@contextmanager
def open_warehouse() -> Iterator[Any]:
    """The warehouse client with the one token the pipeline sends."""
    from shipping.connections import single_token
    from shipping.warehouse import WarehouseClient

    state = load_state()
    url = os.environ.get("SHIPPING_WAREHOUSE_URL") or (state.warehouse_url if state else None)
    token = os.environ.get(TOKEN_VAR) or (state.warehouse_api_token if state else None)
    if not url or not token:
        raise CliError(
            f"no warehouse: set SHIPPING_WAREHOUSE_URL and {TOKEN_VAR} or start the stack (make up)"
        )
    try:
        single_token(token)
    except errors.ConnectionConfigError as exc:
        raise CliError(str(exc)) from exc
    with WarehouseClient(url, token) as client:
        yield client


def find_order(ledger: Any, order_id: str) -> Any:
    """The ledger's order, or CliError (exit 1) when it has none."""
    found = ledger.get_order(order_id)
    if found is None:
        raise CliError(f"unknown order {order_id!r}")
    return found


# ------------------------------------------------------------------- intake
@dataclass(frozen=True)
class Intake:
    """An order's run as Airflow has it, for an order the ledger does not know (yet)."""

    order_id: str
    run_id: str
    run_state: str | None
    task_state: str | None  # register_order's

    @property
    def failed(self) -> bool:
        """Whether intake failed: no try of ``register_order`` is coming by itself."""
        if self.task_state in FAILED_TI_STATES:
            return True
        return self.run_state == "failed" and self.task_state != "success"

    def describe(self) -> str:
        """What is known, in one sentence."""
        if self.failed:
            return (
                f"order {self.order_id} is not in the ledger: its run {self.run_id} failed at "
                f"intake ({INTAKE_TASK} {self.task_state or 'did not run'}) before the ledger "
                "recorded the order (was the ledger unreachable?)"
            )
        return (
            f"order {self.order_id} is not in the ledger yet: its run {self.run_id} is "
            f"{self.run_state}, {INTAKE_TASK} {self.task_state or 'not started'}"
        )

    def to_json(self) -> dict[str, Any]:
        """``shipping status --json`` of such an order: no state, no lines, the run."""
        return {
            "order_id": self.order_id,
            "state": None,
            "lines": [],
            "run_id": self.run_id,
            "run_state": self.run_state,
            "intake": "failed" if self.failed else self.task_state,
            "needs": [f"shipping retry {self.order_id}"] if self.failed else [],
        }


def task_state(instances: list[dict[str, Any]], task_id: str) -> str | None:
    """The state of an unmapped task among a run's task instances (None if it has none)."""
    return next((ti.get("state") for ti in instances if ti.get("task_id") == task_id), None)


def intake_of(
    api: AirflowClient, order_id: str, run: dict[str, Any] | None = None
) -> Intake | None:
    """The order's run and its ``register_order``, or None when Airflow has no such run."""
    run_id = run_id_for(order_id)
    run = run if run is not None else api.get_run(DAG_ID, run_id)
    if run is None:
        return None
    instances = api.task_instances(DAG_ID, run_id)
    return Intake(order_id, run_id, run.get("state"), task_state(instances, INTAKE_TASK))


def say_needs(message: str, commands: list[str]) -> None:
    """Print that something needs an operator, then the commands to run."""
    print(message)
    for command in commands:
        print(f"  {command}")


def decision_open(instances: list[dict[str, Any]], map_index: int) -> bool:
    """Whether the line at ``map_index`` has a decision waiting for an answer or failed."""
    return any(
        ti.get("task_id") == DECIDE_TASK
        and ti.get("map_index") == map_index
        and ti.get("state") in (AWAITING_INPUT, *FAILED_TI_STATES)
        for ti in instances
    )


def actor() -> str:
    """Who runs the command, as amendments record it."""
    return os.environ.get("SHIPPING_OPERATOR") or getpass.getuser()
