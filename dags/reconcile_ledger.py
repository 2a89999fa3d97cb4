"""
### reconcile_ledger: the ledger checked against the warehouse, hourly

Runs the check of `shipping reconcile --all`: every order of the ledger against the
warehouse's shipments. It changes nothing. When it finds drift (a shipment the ledger
does not know, a ledger shipment the warehouse does not hold, content that differs,
several shipments for one line), the run **fails**, and its error names the orders; the
task's return value (XCom) and log list each drift.

**What to do:** `shipping reconcile ORDER_ID` for each order named, then
`shipping reconcile ORDER_ID --repair` to adopt warehouse truth where that is safe; the
rest needs a person (see docs/operator-runbook.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import dag, task
from dag_support.defaults import DEFAULT_ARGS, ledger, warehouse


@dag(
    dag_id="reconcile_ledger",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # An operators' DAG is useful from the first minute: not paused like a new DAG.
    is_paused_upon_creation=False,
    max_active_runs=1,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    tags=["shipping", "operators"],
)
def reconcile_ledger() -> None:
    """Wire the one task; the check lives in ``shipping.reconcile``."""

    @task(multiple_outputs=False)
    def check_ledger() -> dict[str, Any]:
        import logging

        from shipping.reconcile import DriftFound, reconcile

        book = ledger()
        with warehouse() as client:
            report = reconcile(book, client, book.order_ids())
        for drift in report.drift:
            logging.getLogger(__name__).error(
                "drift: order %s line %s: %s: %s",
                drift.order_id,
                drift.line_id,
                drift.kind,
                drift.detail,
            )
        if not report.clean:
            raise DriftFound(report.to_json())
        return report.to_json()

    check_ledger()


reconcile_ledger()
