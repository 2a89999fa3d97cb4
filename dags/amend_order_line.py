"""
### amend_order_line: fix or cancel a failed order line by its ids (operators)

**For a refused line, answer its required action instead** (order_intake's `decide_line`,
under *Required actions*): it applies the same fix or cancel and ships the line, with no
clear. This form remains for a line that has no open required action: one whose decision
failed (its new SKU refused again) or of a run from before decisions existed. Then clear
the line with *Downstream*, which includes its decision.

A line the warehouse refused (an unknown SKU, a bad quantity) fails again on every
retry: a retry cannot change what the line's task reads. Trigger this DAG with its form
(**Trigger** → the Params below) to record a correction in the ledger; the line's task
reads it when it runs again.

- **fix**: a new `sku` and/or `quantity`; **cancel**: the line is never posted again and
  the order finalizes without it.
- Allowed only for a FAILED line that has no shipment (the ledger and the warehouse
  agree); otherwise this run fails, final, saying why. Who, when and why are kept in the
  ledger and shown by `shipping status`.

**Then retry the line:** open the order's run (`order-<order_id>`), click the failed
`ship_item` instance named `line <line_id> · <sku>`, *Clear* it with *Downstream*. The
line ships (fix) or is skipped (cancel), and `finalize_order` completes the order. This
run's return value names the run and the line to clear.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from dag_support.defaults import DEFAULT_ARGS, ledger, warehouse

from shipping.order import LINE_ID_PATTERN, ORDER_ID_PATTERN, ORDER_SCHEMA

_LINE = ORDER_SCHEMA["properties"]["items"]["items"]["properties"]


@dag(
    dag_id="amend_order_line",
    schedule=None,
    catchup=False,
    # An operators' DAG is useful from the first minute: not paused like a new DAG.
    is_paused_upon_creation=False,
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "order_id": Param(type="string", pattern=ORDER_ID_PATTERN, title="Order id"),
        "line_id": Param(type="string", pattern=LINE_ID_PATTERN, title="Line id"),
        "action": Param("fix", enum=["fix", "cancel"], title="Fix or cancel"),
        # Optional (fix only): the order's own rules for a line's SKU and quantity. With
        # ``schema=`` Param takes the schema as given and drops other keywords, so the
        # form's label (``title``) goes inside it.
        "sku": Param(None, schema={**_LINE["sku"], "type": ["null", "string"], "title": "New SKU"}),
        "quantity": Param(
            None,
            schema={**_LINE["quantity"], "type": ["null", "integer"], "title": "New quantity"},
        ),
        "reason": Param(type="string", minLength=1, maxLength=500, title="Why"),
    },
    tags=["shipping", "operators"],
)
def amend_order_line() -> None:
    """Wire the one task; the rules live in ``shipping.amend``."""

    @task(multiple_outputs=False)
    def amend_line() -> dict[str, Any]:
        from shipping.amend import amend_line as amend
        from shipping.ledger import Amendment
        from shipping.order import run_id_for

        context = get_current_context()
        params = context["params"]
        action = Amendment.FIX if params["action"] == "fix" else Amendment.CANCEL
        book = ledger()
        with warehouse() as client:
            amended = amend(
                book,
                client,
                order_id=params["order_id"],
                line_id=params["line_id"],
                action=action,
                actor=context["dag_run"].triggering_user_name or "airflow",
                reason=params["reason"],
                sku=params["sku"] if action is Amendment.FIX else None,
                quantity=params["quantity"] if action is Amendment.FIX else None,
            )
        line = amended.line
        order = book.get_order(params["order_id"])
        run_id = (order.run_id if order else None) or run_id_for(params["order_id"])
        return {
            "order_id": params["order_id"],
            "line_id": line.line_id,
            "state": line.state.value,
            "sku": line.sku,
            "quantity": line.quantity,
            "void_pending": amended.void_error,
            "next": f"clear ship_item 'line {line.line_id}' of run {run_id} (Downstream)",
        }

    amend_line()


amend_order_line()
