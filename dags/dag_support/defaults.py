"""Task defaults shared by every DAG of the project, and how tasks reach their resources.

Light at import (every task process re-parses its DAG file): the ledger and the warehouse
client are imported only when a task asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseHook, Param
from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

from shipping.contract import LEDGER_CONN_ID, WAREHOUSE_CONN_ID

# Final errors fail the task at once: retrying cannot fix a bad order, a refused line or
# a refused correction, and every retry of a refusal would only repeat it. Everything
# else (the warehouse or the ledger unreachable) falls through to the task's retries.
FINAL_ERRORS = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=[
                "shipping.errors.WarehouseRejected",
                "shipping.errors.LedgerError",
                "shipping.errors.ConnectionConfigError",
                "shipping.errors.DriftFound",
            ],
            action=RetryAction.FAIL,
            reason="final: the order, the line or the configuration must change first",
        )
    ]
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "shipping",
    "retries": 2,
    "retry_delay": timedelta(seconds=5),
    "retry_policy": FINAL_ERRORS,
}


def param(schema: dict[str, Any]) -> Param:
    """A Param from a JSON schema.

    Airflow 3.3.2 cannot deserialize a Param whose schema holds a "description" key
    ("got multiple values for keyword argument 'description'"): it is passed beside.
    """
    body = {key: value for key, value in schema.items() if key != "description"}
    return Param(schema=body, description=schema.get("description"))


def checked_at_trigger(params: Mapping[str, Param]) -> dict[str, Param]:
    """Task-level Params that take the run's conf for ``params`` without checking it again.

    Airflow 3.3.2 validates the whole conf against the DAG's Params in every task process,
    twice in a mapped one (``process_params``, from ``get_template_context`` at start-up and
    again when the task is unmapped), each time twice per Param and with the JSON schema
    itself checked against its meta-schema: for an order that is every line, in every
    line's task, so a task's cost grew with the order's size. A task that never reads its
    params needs none of it: the door (``create_dagrun``, where Airflow answers 400)
    validated the conf against the DAG-level Params when the run was triggered, and they
    are unchanged. Task-level Params override the DAG's for that task only, so these empty
    schemas leave the door as it is.
    """
    return {
        name: Param(description="validated when the run was triggered", schema={})
        for name in params
    }


def ledger() -> Any:
    """The ledger of the ``shipping_ledger`` connection."""
    from shipping.connections import ledger_url
    from shipping.ledger import Ledger

    return Ledger.from_url(ledger_url(BaseHook.get_connection(LEDGER_CONN_ID)))


@contextmanager
def warehouse() -> Iterator[Any]:
    """A warehouse client for the ``warehouse_api`` connection."""
    from shipping.connections import warehouse_client

    with warehouse_client(BaseHook.get_connection(WAREHOUSE_CONN_ID)) as client:
        yield client
