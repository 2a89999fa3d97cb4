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
from shipping.errors import retry_rules

# One rule per error family, built from shipping.errors (the one place that says which
# errors are final): a final error fails the task at once, since retrying cannot fix a
# bad order, a refused line or a wrong token; a fenced try and an outage are retried.
# Anything else (a bug) falls through to the task's retries.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=list(classes),
            action=RetryAction.FAIL if final else RetryAction.RETRY,
            reason=reason,
        )
        for classes, final, reason in retry_rules()
    ]
)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "shipping",
    "retries": 2,
    "retry_delay": timedelta(seconds=5),
    "retry_policy": RETRY_POLICY,
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
