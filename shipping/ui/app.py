"""The ledger view's web app: HTML pages for Airflow's UI and their JSON, read-only.

Pages (server-rendered, no script; every ledger text is escaped by Jinja2's autoescape):

    GET /runs/{dag_id}/{run_id}                      the order of an order_intake run
    GET /runs/{dag_id}/{run_id}/lines/{map_index}    one line (a ship_item instance's page)
    GET /orders/{order_id}                           an order by its id
    GET /open                                        the open orders that need an operator

and their JSON under ``/api``: ``/api/orders/{order_id}``, ``/api/runs/{dag_id}/{run_id}``,
``/api/open``. The app knows nothing of Airflow: :class:`Backend` gives it the ledger, the
warehouse and what Airflow says of a run, and :class:`Guards` the dependencies that
authenticate each request and authorize it (reading a Dag's runs); the plugin passes
Airflow's own (:mod:`shipping.airflow_plugin`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from shipping.contract import DAG_ID
from shipping.ledger import Ledger
from shipping.orderview import (
    OpenOrder,
    OrderView,
    RunTasks,
    open_orders,
    order_view,
    reconciliation_of,
)
from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)

#: Where Airflow's UI shows a run (the view's links open it in the top window).
RUN_PAGE = "/dags/{dag_id}/runs/{run_id}"
#: At most this many open orders are listed (the oldest failures first are Airflow's).
OPEN_ORDERS_LIMIT = 200


class Backend(Protocol):
    """What the views read, each call one short unit of work."""

    def ledger(self) -> Ledger:
        """The ledger (kept for the process: an engine with its pool)."""

    def warehouse(self) -> AbstractContextManager[WarehouseClient]:
        """A warehouse client for one view (no retries: a view answers at once)."""

    def run_tasks(self, dag_id: str, run_id: str) -> RunTasks | None:
        """The run's state and all its task instances' states; None if no such run."""

    def failed_runs(self, limit: int) -> list[RunTasks]:
        """``order_intake`` runs holding a failed task instance, with only those."""


@dataclass(frozen=True)
class Guards:
    """FastAPI dependencies that refuse a request (401/403) or let it through.

    Attributes:
        authenticated: Every request: who is asking (401 without valid credentials).
        read_runs: The Dag named by the request's ``dag_id`` path parameter: may the
            user read its runs.
        read_orders: May the user read ``order_intake``'s runs (orders by id, open orders).
    """

    authenticated: Callable[..., Any]
    read_runs: Callable[..., Any]
    read_orders: Callable[..., Any]


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every ledger text (reasons, errors, actors) is data, never markup
    undefined=jinja2.StrictUndefined,
)


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    started = time.perf_counter()
    html = _env.get_template(template).render(request=request, dag_id=DAG_ID, **context)
    logger.debug("rendered %s in %.1f ms", template, (time.perf_counter() - started) * 1000)
    return HTMLResponse(html)


def create_app(backend: Backend, guards: Guards) -> FastAPI:
    """The ledger view's app (mounted by the plugin under its URL prefix)."""
    app = FastAPI(
        title="Shipping ledger view",
        description="Each order's ledger inside Airflow's UI (read-only).",
        dependencies=[Depends(guards.authenticated)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    read_runs = [Depends(guards.read_runs)]
    read_orders = [Depends(guards.read_orders)]

    def view_of_order(order_id: str) -> OrderView:
        ledger = backend.ledger()
        order = ledger.get_order(order_id)
        if order is None:
            raise HTTPException(404, f"the ledger has no order {order_id!r}")
        run = backend.run_tasks(DAG_ID, order.run_id) if order.run_id else None
        with backend.warehouse() as client:
            reconciliation = reconciliation_of(ledger, client, order_id)
        return order_view(order, run, reconciliation)

    def order_of_run(dag_id: str, run_id: str) -> str | None:
        if dag_id != DAG_ID:
            return None
        return backend.ledger().orders_of_runs([run_id]).get(run_id)

    def open_now() -> list[OpenOrder]:
        return open_orders(backend.ledger(), backend.failed_runs(OPEN_ORDERS_LIMIT))

    # ------------------------------------------------------------------ JSON
    @app.get("/api/orders/{order_id}", dependencies=read_orders)
    def order_json(order_id: str) -> dict[str, Any]:
        """One order's view, as JSON."""
        return view_of_order(order_id).to_json()

    @app.get("/api/runs/{dag_id}/{run_id}", dependencies=read_runs)
    def run_json(dag_id: str, run_id: str) -> dict[str, Any]:
        """The view of the order a run presented, as JSON (404: no order for the run)."""
        order_id = order_of_run(dag_id, run_id)
        if order_id is None:
            raise HTTPException(404, f"no order in the ledger for run {run_id!r} of {dag_id!r}")
        return view_of_order(order_id).to_json()

    @app.get("/api/open", dependencies=read_orders)
    def open_json() -> dict[str, Any]:
        """The open orders that need an operator, each with what ends it."""
        return {"orders": [order.to_json() for order in open_now()]}

    # ------------------------------------------------------------------ HTML
    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=read_runs)
    def run_page(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
        """The order of a run, on its run page in Airflow's UI."""
        return _run_page(request, dag_id, run_id, None)

    @app.get(
        "/runs/{dag_id}/{run_id}/lines/{map_index}",
        response_class=HTMLResponse,
        dependencies=read_runs,
    )
    def line_page(request: Request, dag_id: str, run_id: str, map_index: str) -> HTMLResponse:
        """One line of the order, on a ship_item instance's page in Airflow's UI."""
        # Airflow fills {MAP_INDEX} with -1 (or nothing) for an unmapped task.
        index = int(map_index) if map_index.lstrip("-").isdigit() else -1
        return _run_page(request, dag_id, run_id, index)

    def _run_page(request: Request, dag_id: str, run_id: str, position: int | None) -> HTMLResponse:
        order_id = order_of_run(dag_id, run_id)
        if order_id is None:
            return _page(
                request, "no_order.html", run_id=run_id, run_dag_id=dag_id, run_page=RUN_PAGE
            )
        view = view_of_order(order_id)
        lines = view.lines
        if position is not None:
            lines = tuple(line for line in view.lines if line.position == position)
        return _page(
            request,
            "order.html",
            view=view,
            lines=lines,
            one_line=position is not None,
            presented_by=run_id,
            run_page=RUN_PAGE,
        )

    @app.get("/orders/{order_id}", response_class=HTMLResponse, dependencies=read_orders)
    def order_page(request: Request, order_id: str) -> HTMLResponse:
        """An order by its id (linked from the open orders)."""
        view = view_of_order(order_id)
        return _page(
            request,
            "order.html",
            view=view,
            lines=view.lines,
            one_line=False,
            presented_by=None,
            run_page=RUN_PAGE,
        )

    @app.get("/open", response_class=HTMLResponse, dependencies=read_orders)
    def open_page(request: Request) -> HTMLResponse:
        """The open orders that need an operator, each with the commands that end it."""
        return _page(
            request, "open.html", orders=open_now(), limit=OPEN_ORDERS_LIMIT, run_page=RUN_PAGE
        )

    return app
