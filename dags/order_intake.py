"""
### order_intake: one shipping task per order line, joined by a reducer

Trigger with the order as the run's conf and `order-<order_id>` as the run id
(`shipping submit ORDER.json` does both). Airflow refuses an order that breaks the
schema with HTTP 400 before any run exists.

1. **register_order** checks what the schema cannot (unique line ids), records the
   order and its lines in the ledger, and hands the lines to the fan-out. The first run
   of an order owns it: another run of the same order (another run id) fans out to
   nothing and finishes at once (its log names the owner); other content under the same
   order id fails it, final.
2. **ship_item** runs once per line, named `line <id> · <sku>`. It looks the line up at
   the warehouse by its key `<order_id>:<line_id>` and posts it only if it is not there,
   under that key, so a retry or a re-run never ships it twice. Outages are retried; a refusal (unknown SKU, bad request) fails at once.
3. **decide_line** (one per line, same map index) runs only when its line's
   `ship_item` failed. A final refusal or a content conflict asks the operator under
   **Required actions**: "Decide line <id> · <sku>", fix (SKU, quantity, pre-filled) or
   cancel, with a reason. The answer is applied through the ledger's fence as the Airflow
   user who gave it, and ships the line in the same task. Waiting holds no worker and no
   `warehouse` pool slot.
4. **finalize_order** marks the order SHIPPED once every line shipped or was cancelled,
   exactly once.

**Retry a failed line** (an outage, not a decision): open the run's Grid, pick the failed
`ship_item` instance, *Clear* it with *Downstream* selected. Only that line, its decision
and the reducer run again. The runbook is docs/operator-ui.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import TriggerRule, dag, get_current_context, task, task_group
from dag_support.defaults import DEFAULT_ARGS, checked_at_trigger, ledger, param, warehouse
from dag_support.line_decision import LineDecisionOperator

from shipping.contract import (
    DAG_ID,
    DECIDE_TASK,
    SHIP_ITEM_MAX_ACTIVE_PER_RUN,
    SHIP_TASK,
    WAREHOUSE_POOL,
)
from shipping.order import ORDER_SCHEMA

# The door: Airflow checks a triggered run's conf against these and answers 400.
ORDER_PARAMS = {name: param(schema) for name, schema in ORDER_SCHEMA["properties"].items()}


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params=ORDER_PARAMS,
    tags=["shipping"],
)
def order_intake() -> None:
    """Wire the order's tasks; the logic lives in ``shipping.pipeline``."""

    @task
    def register_order() -> list[dict[str, Any]]:
        from shipping import pipeline

        context = get_current_context()
        # The posted conf, not the params: keys the DAG does not declare must be refused,
        # and Airflow's params would silently drop them.
        registered = pipeline.register(
            ledger(), context["dag_run"].conf or {}, run_id=context["run_id"]
        )
        # What every line shares goes to .partial() under its own key; only the lines
        # (the return value, as mapping requires) are expanded.
        context["ti"].xcom_push(
            key="order",
            value={
                "order_id": registered["order_id"],
                "ship_to": registered["ship_to"],
                "owner_run_id": registered["owner_run_id"],
            },
        )
        return [dict(line) for line in registered["lines"]]

    @task(
        # One XCom (the result), not one more per key of the returned dict: Airflow infers
        # multiple_outputs from the dict annotation, an Execution API call per key per line.
        multiple_outputs=False,
        pool=WAREHOUSE_POOL,
        max_active_tis_per_dagrun=SHIP_ITEM_MAX_ACTIVE_PER_RUN,
        map_index_template="{{ line_label }}",
        # The client already retried for about a minute; these cover longer outages.
        retries=4,
        retry_delay=timedelta(seconds=15),
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=5),
        # Checked at the door; otherwise every line's task would check every line again.
        params=checked_at_trigger(ORDER_PARAMS),
    )
    def ship_item(order: dict[str, Any], line: dict[str, Any]) -> dict[str, Any]:
        from shipping import pipeline

        context = get_current_context()
        context["line_label"] = pipeline.line_label(line)  # rendered as the instance name
        book, try_number = ledger(), context["ti"].try_number
        with pipeline.line_client(
            book,
            warehouse,
            order_id=order["order_id"],
            line_id=line["line_id"],
            try_number=try_number,
        ) as client:
            result = pipeline.ship_line(
                ledger=book,
                client=client,
                order_id=order["order_id"],
                ship_to=order["ship_to"],
                line=line,
                try_number=try_number,
            )
        # An operator's fix may have changed the SKU: the name follows the ledger.
        context["line_label"] = pipeline.line_label(result)
        return dict(result)

    @task(
        multiple_outputs=False,
        params=checked_at_trigger(ORDER_PARAMS),
        # After every line's last word: its ship_item shipped it (its decide_line skipped),
        # or its decision did (ship_item failed, decide_line succeeded). A decision that
        # failed, or a line that failed for another reason, fails the run as before.
        trigger_rule=TriggerRule.NONE_FAILED,
    )
    def finalize_order(order: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from shipping import pipeline

        context = get_current_context()
        if order.get("owner_run_id", context["run_id"]) != context["run_id"]:
            raise AirflowSkipException(f"a duplicate of run {order['owner_run_id']}: nothing to do")
        # Every line's result in one call per task (ship_item's are not an input: a failed
        # instance among them would hold this task back, though its decision shipped it).
        results = context["ti"].xcom_pull(task_ids=[SHIP_TASK, DECIDE_TASK])
        return pipeline.finalize(ledger(), order["order_id"], [r for r in results if r])

    @task_group(group_id="line", prefix_group_id=False)
    def each_line(order: Any, line: Any) -> Any:
        """One line: ship it; if it fails for good, ask an operator (same map index)."""
        shipped = ship_item(order=order, line=line)
        decided = LineDecisionOperator(
            task_id=DECIDE_TASK,
            order=order,
            line=line,
            # Runs only when this line's ship_item failed; skipped, without a process,
            # when it shipped. Waiting for the answer holds no pool or worker slot; the
            # answer ships the line, through the warehouse pool like ship_item.
            trigger_rule=TriggerRule.ONE_FAILED,
            pool=WAREHOUSE_POOL,
            map_index_template="{{ line_label }}",
        )
        shipped >> decided
        return decided

    lines = register_order()
    order = lines["order"]
    decided = each_line.partial(order=order).expand(line=lines)
    decided >> finalize_order(order)


order_intake()
