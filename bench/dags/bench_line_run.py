"""
### bench_line_run: one DAG run per order line (benchmark only)

The pattern the product replaces: the benchmark registers the order in the ledger, then
triggers one run of this DAG per line with `{"order_id", "ship_to", "line"}` as conf. The
one task ships its line with the project's own code (`shipping.pipeline.ship_line`, the
warehouse client and the ledger from the same connections as `order_intake`).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook, dag, get_current_context, task

from shipping.contract import LEDGER_CONN_ID, WAREHOUSE_CONN_ID


@dag(dag_id="bench_line_run", schedule=None, catchup=False, doc_md=__doc__, tags=["bench"])
def bench_line_run() -> None:
    """Wire the one task."""

    @task
    def ship_line() -> dict[str, Any]:
        from shipping import pipeline
        from shipping.connections import ledger_url, warehouse_client
        from shipping.ledger import Ledger

        context = get_current_context()
        conf = context["dag_run"].conf or {}
        ledger = Ledger.from_url(ledger_url(BaseHook.get_connection(LEDGER_CONN_ID)))
        with warehouse_client(BaseHook.get_connection(WAREHOUSE_CONN_ID)) as client:
            return dict(
                pipeline.ship_line(
                    ledger=ledger,
                    client=client,
                    order_id=conf["order_id"],
                    ship_to=conf["ship_to"],
                    line=conf["line"],
                    try_number=context["ti"].try_number,
                )
            )

    ship_line()


bench_line_run()
