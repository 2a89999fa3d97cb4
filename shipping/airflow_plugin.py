"""The ledger view as an Airflow plugin: the only module of ``shipping`` that imports Airflow.

Loaded by Airflow's plugin manager through the ``airflow.plugins`` entry point of this
package (``pyproject.toml``), so every Airflow process that has the package installed has
it (the local stack in both executor modes, the compose image): no file to copy into
``$AIRFLOW_HOME/plugins``. What it adds to the API server (no new service):

* a FastAPI app mounted at :data:`URL_PREFIX` (:mod:`shipping.ui.app`), behind Airflow's
  own authentication: the dependencies of Airflow's REST API
  (``airflow.api_fastapi.core_api.security``): ``get_user`` reads the JWT from the
  ``Authorization: Bearer`` header or the UI's ``_token`` cookie (401 without one, 403 for
  an invalid one), and ``requires_access_dag`` asks the auth manager whether the user may
  read the Dag's runs (403 otherwise). A plugin's app is not behind Airflow's auth by
  itself: every route here depends on these;
* external views that show its pages inside the UI: a *Ledger* tab on every Dag run page
  and task instance page (the order of an ``order_intake`` run, one line for a
  ``ship_item`` instance) and *Open orders* in the navigation's Browse menu.

The views read the ledger through the connection the tasks use (``shipping_ledger``,
``AIRFLOW_CONN_SHIPPING_LEDGER`` on the stack and in compose), the warehouse through
``warehouse_api``, and task states straight from Airflow's metadata database (the API
server's own session): a few indexed queries per view, never the REST API's
per-instance serialization.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

# The Task SDK's base class: task processes load plugins too (for macros), and this one
# must cost them nothing. Airflow's API-server modules are imported only when the API
# server asks for the app (:func:`ledger_app`).
from airflow.sdk.plugins_manager import AirflowPlugin

from shipping.contract import DAG_ID, LEDGER_CONN_ID, WAREHOUSE_CONN_ID

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shipping.ledger import Ledger
    from shipping.orderview import RunTasks
    from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)

#: Where the API server serves the ledger view (not one of Airflow's reserved prefixes).
URL_PREFIX = "/shipping-ledger"
#: A view answers at once: one warehouse attempt, short timeouts.
VIEW_WAREHOUSE_TIMEOUT = (2.0, 10.0)


def _text(state: Any) -> str | None:
    """A task or run state as its plain value (Airflow's enums are str subclasses)."""
    if state is None:
        return None
    return str(getattr(state, "value", state))


class AirflowBackend:
    """The ledger view's :class:`~shipping.ui.app.Backend` inside Airflow's API server."""

    def __init__(self) -> None:
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    def ledger(self) -> Ledger:
        """The ledger of the ``shipping_ledger`` connection, made once per process."""
        from airflow.models.connection import Connection

        from shipping.connections import ledger_url
        from shipping.ledger import Ledger

        with self._lock:
            if self._ledger is None:
                conn = Connection.get_connection_from_secrets(LEDGER_CONN_ID)
                self._ledger = Ledger.from_url(ledger_url(conn))
            return self._ledger

    @contextmanager
    def warehouse(self) -> Iterator[WarehouseClient]:
        """A client of the ``warehouse_api`` connection, one attempt per call."""
        from airflow.models.connection import Connection

        from shipping.connections import warehouse_client
        from shipping.warehouse import RetryPolicy

        conn = Connection.get_connection_from_secrets(WAREHOUSE_CONN_ID)
        with warehouse_client(
            conn, timeout=VIEW_WAREHOUSE_TIMEOUT, retry=RetryPolicy(max_attempts=1)
        ) as client:
            yield client

    def run_tasks(self, dag_id: str, run_id: str) -> RunTasks | None:
        """The run's state and each task instance's state and try (two indexed queries)."""
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            state = session.scalar(
                select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            )
            if state is None:
                return None
            rows = session.execute(
                select(
                    TaskInstance.task_id,
                    TaskInstance.map_index,
                    TaskInstance.state,
                    TaskInstance.try_number,
                ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            ).all()
        return _run_tasks(run_id, _text(state), rows)

    def failed_runs(self, limit: int) -> list[RunTasks]:
        """``order_intake`` runs with a failed task instance, and those instances only."""
        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import and_, or_, select

        from shipping.advice import AWAITING_INPUT, DECIDE_TASK, FAILED_TI_STATES

        with create_session() as session:
            rows = session.execute(
                select(
                    TaskInstance.run_id,
                    TaskInstance.task_id,
                    TaskInstance.map_index,
                    TaskInstance.state,
                    TaskInstance.try_number,
                ).where(
                    TaskInstance.dag_id == DAG_ID,
                    or_(
                        TaskInstance.state.in_(sorted(FAILED_TI_STATES)),
                        and_(
                            TaskInstance.task_id == DECIDE_TASK,
                            TaskInstance.state == AWAITING_INPUT,
                        ),
                    ),
                )
            ).all()
            by_run: dict[str, list[Any]] = defaultdict(list)
            for row in rows:
                by_run[row.run_id].append(row)
            run_ids = sorted(by_run)[:limit]
            states: dict[str, Any] = dict(
                session.execute(
                    select(DagRun.run_id, DagRun.state).where(
                        DagRun.dag_id == DAG_ID, DagRun.run_id.in_(run_ids)
                    )
                ).all()
            )
        return [
            _run_tasks(run_id, _text(states.get(run_id)), [r[1:] for r in by_run[run_id]])
            for run_id in run_ids
        ]


def _run_tasks(run_id: str, state: str | None, rows: Any) -> RunTasks:
    """A :class:`RunTasks` from ``(task_id, map_index, state, try_number)`` rows."""
    from shipping.advice import DECIDE_TASK, INTAKE_TASK, REDUCER_TASK, SHIP_TASK
    from shipping.orderview import RunTasks, TaskState

    lines: dict[int, TaskState] = {}
    decisions: dict[int, str | None] = {}
    intake = reducer = None
    for task_id, map_index, ti_state, try_number in rows:
        if task_id == SHIP_TASK:
            lines[int(map_index)] = TaskState(_text(ti_state), int(try_number or 0))
        elif task_id == DECIDE_TASK:
            decisions[int(map_index)] = _text(ti_state)
        elif task_id == INTAKE_TASK:
            intake = _text(ti_state)
        elif task_id == REDUCER_TASK:
            reducer = _text(ti_state)
    return RunTasks(run_id, state, lines, intake, reducer, decisions)


@cache
def ledger_app() -> FastAPI:
    """The ledger view's app behind Airflow's authentication (built once, when asked)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag

    from shipping.ui.app import Guards, create_app

    guards = Guards(
        authenticated=get_user,
        read_runs=requires_access_dag("GET", DagAccessEntity.RUN),
        read_orders=requires_access_dag("GET", DagAccessEntity.RUN, param_dag_id=DAG_ID),
    )
    return create_app(AirflowBackend(), guards)


class ShippingLedgerPlugin(AirflowPlugin):
    """Each order's ledger inside Airflow's UI (see the module's docstring)."""

    name = "shipping_ledger"

    @property  # only the API server asks for it
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The ledger view's app, mounted at :data:`URL_PREFIX`."""
        return [{"app": ledger_app(), "url_prefix": URL_PREFIX, "name": "Shipping ledger view"}]

    external_views = [
        {
            "name": "Ledger",
            "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "ledger",
        },
        {
            "name": "Ledger",
            "href": URL_PREFIX + "/runs/{DAG_ID}/{RUN_ID}/lines/{MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "ledger-line",
        },
        {
            "name": "Open orders",
            "href": URL_PREFIX + "/open",
            "destination": "nav",
            "category": "browse",
            "url_route": "open-orders",
        },
    ]
