"""
### bench_loop: one task looping over an order's lines (benchmark only)

The other pattern the product replaces: one task registers the order (its conf), ships
every line one after another with `shipping.pipeline.ship_line`, and finalizes it. Cheap,
but one line's failure or retry is the whole order's, and no line is visible on its own.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook, dag, get_current_context, task

from shipping.contract import LEDGER_CONN_ID, WAREHOUSE_CONN_ID


@dag(dag_id="bench_loop", schedule=None, catchup=False, doc_md=__doc__, tags=["bench"])
def bench_loop() -> None:
    """Wire the one task."""

    @task
    def ship_order() -> dict[str, Any]:
        from shipping import pipeline
        from shipping.connections import ledger_url, warehouse_client
        from shipping.ledger import Ledger

        context = get_current_context()
        ledger = Ledger.from_url(ledger_url(BaseHook.get_connection(LEDGER_CONN_ID)))
        registered = pipeline.register(
            ledger, context["dag_run"].conf or {}, run_id=context["run_id"]
        )
        results = []
        with warehouse_client(BaseHook.get_connection(WAREHOUSE_CONN_ID)) as client:
            for line in registered["lines"]:
                results.append(
                    pipeline.ship_line(
                        ledger=ledger,
                        client=client,
                        order_id=registered["order_id"],
                        ship_to=registered["ship_to"],
                        line=line,
                        try_number=context["ti"].try_number,
                    )
                )
        return pipeline.finalize(ledger, registered["order_id"], results)

    ship_order()


bench_loop()
