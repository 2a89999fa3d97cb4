"""A line that failed for good asks an operator for a decision: fix it or cancel it.

The Airflow side (a human-in-the-loop task per line, ``dags/dag_support/line_decision.py``)
only asks and hands the answer over; what a line needs, what the form shows and what an
answer does are decided here, without Airflow:

* :func:`assess` reads the line in the ledger and says what its decision task does: nothing
  (the line shipped or was cancelled meanwhile), ask (a final refusal or a content
  conflict, and no shipment), ship (an answer was already applied, e.g. by an earlier try
  of the task, or by ``shipping fix``), or fail (an outage or a configuration error: not an
  operator's decision, ``shipping retry`` ends it).
* :func:`form` is what the operator sees: a subject naming the line and its SKU, the error,
  and the fields pre-filled with the line's current values.
* :func:`apply` takes the answer through the same fenced path as ``shipping fix`` and
  ``shipping cancel`` (:func:`shipping.amend.amend_line`), with the Airflow user who
  answered as the actor, and then ships the line (or completes its cancel) with
  :func:`shipping.pipeline.ship_line`, in the same task: the order finalizes by itself.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from shipping.errors import AmendmentRefused, ErrorFamily, family_of
from shipping.order import MAX_REASON_LENGTH

if TYPE_CHECKING:  # light at import: the DAG file builds the form's fields from here
    from shipping.ledger import Ledger, LineStatus
    from shipping.pipeline import LineResult
    from shipping.warehouse import WarehouseClient

__all__ = [
    "CANCEL",
    "DECIDED_FAMILIES",
    "FIX",
    "OPTIONS",
    "Assessment",
    "Form",
    "Next",
    "actor_of",
    "apply",
    "assess",
    "form",
    "form_schema",
    "ship",
]

logger = logging.getLogger(__name__)

#: The form's two buttons (the HITL options), in the order shown.
FIX: Final = "Fix and ship"
CANCEL: Final = "Cancel line"
OPTIONS: Final = (FIX, CANCEL)

#: The error families an operator decides: a retry cannot cure them, a new content can.
DECIDED_FAMILIES: Final = frozenset({ErrorFamily.REFUSED, ErrorFamily.CONFLICT})


class Next(enum.StrEnum):
    """What a line's decision task does, from the line as the ledger holds it."""

    NOTHING = "nothing"  # shipped or cancelled: no decision (the task skips)
    ASK = "ask"  # failed for good, no shipment: ask the operator
    SHIP = "ship"  # amended already (an answer, or `shipping fix/cancel`): ship it now
    FAIL = "fail"  # failed for another reason: not a decision, `shipping retry` ends it


@dataclass(frozen=True)
class Assessment:
    """What to do with a line, and why (the task's log says it)."""

    next: Next
    line: LineStatus
    why: str


def assess(line: LineStatus) -> Assessment:
    """What the decision task of ``line`` does (see :class:`Next`).

    A line amended since it was first posted (a fix: revision above 0) whose last try
    failed on something a retry can cure is shipped again: that is the decision task's
    retry after its answer met an outage, or ``shipping fix`` followed by one.
    """
    from shipping.ledger import LineState

    family = family_of(line.error_class)
    if line.state in (LineState.SHIPPED, LineState.CANCELLED):
        return Assessment(Next.NOTHING, line, f"the line is {line.state}")
    if line.state is LineState.CANCELLING or line.void_key is not None:
        return Assessment(Next.SHIP, line, "an amendment is waiting for its void")
    if line.state is LineState.FAILED and line.shipment_id is None:
        if family in DECIDED_FAMILIES and line.error_final:
            return Assessment(Next.ASK, line, f"{line.error_class} ({family}): final")
        if family in DECIDED_FAMILIES or (line.revision > 0 and not line.error_final):
            return Assessment(Next.SHIP, line, "the line was fixed since it was refused")
    return Assessment(
        Next.FAIL,
        line,
        f"the line is {line.state} with {line.error_class or 'no error'} "
        f"({family or 'none'}): not an operator's decision; `shipping retry` re-runs it",
    )


@dataclass(frozen=True)
class Form:
    """What the operator sees: the required action's subject, its body, the fields."""

    subject: str
    body: str
    defaults: dict[str, Any]


def form(order_id: str, line: LineStatus, ship_to: Mapping[str, Any]) -> Form:
    """The required action of ``line``: named by line id and SKU, fields pre-filled."""
    address = ", ".join(str(v) for v in ship_to.values() if v)
    body = "\n".join(
        [
            f"**Order {order_id}, line {line.line_id}**: {line.sku} x{line.quantity} to {address}.",
            "",
            f"The warehouse did not ship it: `{line.last_error}`",
            "",
            f"- **{FIX}**: ship it with the SKU and quantity below (the line moves to a new "
            "idempotency key; the old one is voided at the warehouse).",
            f"- **{CANCEL}**: never ship it; the order finalizes without it.",
            "",
            "A reason is required either way; it is kept in the ledger with your user name "
            "(`shipping status`). The CLI does the same: `shipping fix` / `shipping cancel`.",
        ]
    )
    return Form(
        subject=f"Decide line {line.line_id} · {line.sku} of order {order_id}",
        body=body,
        defaults={"sku": line.sku, "quantity": line.quantity, "reason": None},
    )


def form_schema(line_schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The form's fields as JSON schemas (the order's own rules for SKU and quantity).

    Args:
        line_schema: The order schema's properties of a line (``shipping.order``).
    """
    return {
        "sku": {**line_schema["sku"], "title": "SKU (for a fix)"},
        "quantity": {**line_schema["quantity"], "title": "Quantity (for a fix)"},
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_REASON_LENGTH,
            "title": "Reason (required)",
        },
    }


def actor_of(responder: Mapping[str, Any] | None) -> str:
    """The audit trail's actor: the Airflow user who answered (name, else id)."""
    if responder:
        for key in ("name", "id"):
            value = responder.get(key)
            if isinstance(value, str | int) and str(value).strip():
                return str(value)
    raise AmendmentRefused("?", "?", "the answer names no Airflow user")


def apply(
    ledger: Ledger,
    client: WarehouseClient,
    *,
    order_id: str,
    ship_to: Mapping[str, str],
    line_id: str,
    choice: str,
    answer: Mapping[str, Any],
    responder: Mapping[str, Any] | None,
) -> LineResult:
    """Apply an operator's answer through the fence, then ship the line (or finish its cancel).

    The answer is checked before anything changes: a refused answer changes nothing.

    Args:
        ledger: The ledger.
        client: The warehouse client.
        order_id: The order.
        ship_to: The order's address.
        line_id: The line decided.
        choice: :data:`FIX` or :data:`CANCEL`.
        answer: The form's values: ``reason``, and ``sku`` / ``quantity`` for a fix.
        responder: The Airflow user who answered (``{"id", "name"}``).

    Returns:
        The line's result, as ``ship_item`` returns it.

    Raises:
        AmendmentRefused: The answer is invalid (no reason, no change, bad values) or the
            line can no longer be amended; nothing changed.
        shipping.errors.WarehouseError: The line could not be shipped (a refusal of the
            new content is final, an outage is retried by the task).
    """
    from shipping.amend import amend_line, reason_problem
    from shipping.ledger import Amendment

    if choice not in OPTIONS:
        raise AmendmentRefused(order_id, line_id, f"unknown choice {choice!r}")
    reason = str(answer.get("reason") or "")
    if problem := reason_problem(reason):
        raise AmendmentRefused(order_id, line_id, problem)
    actor = actor_of(responder)
    if choice == FIX:
        recorded = ledger.get_line(order_id=order_id, line_id=line_id)
        sku = answer.get("sku")
        quantity = answer.get("quantity")
        amend_line(
            ledger,
            client,
            order_id=order_id,
            line_id=line_id,
            action=Amendment.FIX,
            actor=actor,
            reason=reason,
            sku=sku if sku != recorded.sku else None,
            quantity=quantity if quantity != recorded.quantity else None,
        )
    else:
        amend_line(
            ledger,
            client,
            order_id=order_id,
            line_id=line_id,
            action=Amendment.CANCEL,
            actor=actor,
            reason=reason,
        )
    logger.info("order %s line %s: %s by %s: %s", order_id, line_id, choice, actor, reason)
    return ship(ledger, client, order_id=order_id, ship_to=ship_to, line_id=line_id)


def ship(
    ledger: Ledger,
    client: WarehouseClient,
    *,
    order_id: str,
    ship_to: Mapping[str, str],
    line_id: str,
) -> LineResult:
    """Ship a line as the ledger holds it now (a cancelled one is only voided).

    Its try is recorded under the line's next try number: the decision task's own try
    numbers would overwrite ``ship_item``'s.
    """
    from shipping.pipeline import LineWork, ship_line

    line = ledger.get_line(order_id=order_id, line_id=line_id)
    work: LineWork = {"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}
    return ship_line(
        ledger=ledger,
        client=client,
        order_id=order_id,
        ship_to=ship_to,
        line=work,
        try_number=ledger.next_try_number(order_id=order_id, line_id=line_id),
    )
