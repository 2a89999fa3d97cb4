"""The decision task of a line: a human-in-the-loop task that asks an operator to fix or cancel it.

Wiring only: :mod:`shipping.decision` says what a line needs, what the form shows and what
an answer does. This operator is Airflow's ``HITLOperator`` (providers-standard) with the
form filled per line when it runs: on Airflow 3.3 it then waits in ``awaiting_input``,
which holds no worker slot and no pool slot, and shows under *Required actions*. The
answer (``PATCH .../hitlDetails``, or the form) resumes it in ``execute_complete``, which
applies the answer and ships the line in the same task instance.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from dag_support.defaults import ledger, warehouse
from shipping.decision import OPTIONS, form_schema
from shipping.order import ORDER_SCHEMA

#: The form's fields; their defaults are the line's current values, set when the task runs.
_FIELDS = form_schema(ORDER_SCHEMA["properties"]["items"]["items"]["properties"])


class LineDecisionOperator(HITLOperator):
    """Ask whether to fix or cancel one failed line; apply the answer; ship the line.

    Args:
        order: ``{"order_id", "ship_to", ...}`` as ``register_order`` pushed it.
        line: ``{"line_id", "sku", "quantity"}`` (the mapped line).
    """

    template_fields = (*HITLOperator.template_fields, "order", "line")

    def __init__(self, *, order: Any, line: Any, params: Any = None, **kwargs: Any) -> None:
        # Airflow hands the DAG's Params in (the order's); the form shows only the task's.
        # Here they accept null: Airflow validates a task's Params when it starts, before
        # the line's values are known. execute() puts the form's own schemas in.
        merged = ParamsDict(params or {})
        for name, schema in _FIELDS.items():
            merged[name] = Param(None, schema={"type": [schema["type"], "null"]}, source="task")
        super().__init__(
            subject="Decide a failed line",
            options=list(OPTIONS),
            multiple=False,
            params=merged,
            **kwargs,
        )
        self.order = order
        self.line = line

    def execute(self, context: Any) -> Any:
        from shipping import decision
        from shipping.pipeline import line_label

        book = ledger()
        order_id, line_id = self.order["order_id"], self.line["line_id"]
        line = book.get_line(order_id=order_id, line_id=line_id)
        context["line_label"] = line_label({"line_id": line.line_id, "sku": line.sku})
        assessment = decision.assess(line)
        self.log.info("line %s of order %s: %s", line_id, order_id, assessment.why)
        if assessment.next is decision.Next.NOTHING:
            raise AirflowSkipException(assessment.why)
        if assessment.next is decision.Next.FAIL:
            raise AirflowFailException(assessment.why)
        if assessment.next is decision.Next.SHIP:
            return self._ship(book)
        form = decision.form(order_id, line, self.order["ship_to"])
        self.subject, self.body = form.subject, form.body
        # The form: each field pre-filled with the line's value, the reason empty and
        # required (the UI checks the schema; shipping.decision checks the answer again).
        self.params = ParamsDict(
            {
                name: Param(form.defaults[name], schema=schema, source="task")
                for name, schema in _FIELDS.items()
            }
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from shipping import decision
        from shipping.errors import AmendmentRefused
        from shipping.pipeline import line_label

        answer = super().execute_complete(context, event)
        book = ledger()
        try:
            with warehouse() as client:
                result = decision.apply(
                    book,
                    client,
                    order_id=self.order["order_id"],
                    ship_to=self.order["ship_to"],
                    line_id=self.line["line_id"],
                    choice=answer["chosen_options"][0],
                    answer=answer["params_input"],
                    responder=answer["responded_by_user"],
                )
        except AmendmentRefused as exc:
            # Nothing changed; clearing this task asks again, `shipping fix` works too.
            raise AirflowFailException(f"the answer was refused: {exc}") from exc
        context["line_label"] = line_label(result)  # the name follows a fixed SKU
        return dict(result)

    def _ship(self, book: Any) -> dict[str, Any]:
        from shipping import decision

        with warehouse() as client:
            result = decision.ship(
                book,
                client,
                order_id=self.order["order_id"],
                ship_to=self.order["ship_to"],
                line_id=self.line["line_id"],
            )
        return dict(result)
