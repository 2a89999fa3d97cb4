"""Operators' corrections of a failed line: fix its SKU or quantity, or cancel it.

A line the warehouse refused fails again on every retry, because a retry cannot change
what the task reads from Airflow. A correction is recorded in the ledger instead, which
the line's task reads when it runs again; the caller then retries the line (``shipping
retry`` or a clear in the UI).

An amendment never races a try (docs/how-it-works.md, invariant I3). It is fenced in the
ledger first, in one transaction: a fix moves the line to its next revision and a new
key, a cancel makes it CANCELLING; either way the key it shipped under so far is to be
voided. Then that key is voided at the warehouse: whatever a try still in flight posts
under it creates nothing (or, if it already committed, is cancelled), and the void is
recorded with the shipment it cancelled. A try that read the line before the fence
records nothing (``LineFenced``). If the warehouse cannot be reached, the void stays
pending: the line's next try (``shipping retry``) does it before anything else.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from shipping.errors import AmendmentRefused, WarehouseError
from shipping.ledger import Amendment, Ledger, LineStatus, amendment_refusal
from shipping.order import MAX_REASON_LENGTH, TEXT_PATTERN, line_errors
from shipping.pipeline import complete_void
from shipping.warehouse import WarehouseClient

__all__ = ["MAX_REASON_LENGTH", "Amended", "amend_line", "reason_problem"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Amended:
    """What an amendment did.

    Attributes:
        line: The line after it.
        void_error: Why the old key could not be voided at the warehouse yet (the void
            is pending and the line's next try completes it), or None once it is voided.
    """

    line: LineStatus
    void_error: str | None


def reason_problem(reason: str) -> str | None:
    """Why ``reason`` cannot be kept, or None: the order's text rules, 1-500 characters."""
    if not reason.strip():
        return "a reason is required"
    if len(reason) > MAX_REASON_LENGTH:
        return f"the reason is longer than {MAX_REASON_LENGTH} characters"
    if not re.match(TEXT_PATTERN, reason):
        return "the reason holds control characters (newline, tab, escape, ...): use plain text"
    return None


def amend_line(
    ledger: Ledger,
    client: WarehouseClient,
    *,
    order_id: str,
    line_id: str,
    action: Amendment,
    actor: str,
    reason: str,
    sku: str | None = None,
    quantity: int | None = None,
) -> Amended:
    """Fix or cancel a failed line with no shipment, fence it, void its old key.

    Returns:
        The line after the correction, and whether the void is still pending.

    Raises:
        shipping.errors.OrderNotFound: No such order or line.
        AmendmentRefused: The line is not FAILED, has a shipment, the new values break
            the order's rules, or nothing changes.
        shipping.errors.WarehouseError: A void left pending by an earlier amendment
            could not be completed first.
    """
    if problem := reason_problem(reason):
        raise AmendmentRefused(order_id, line_id, problem)
    line = ledger.get_line(order_id=order_id, line_id=line_id)
    if refusal := amendment_refusal(line.state, line.shipment_id):
        raise AmendmentRefused(order_id, line_id, refusal)
    if action is Amendment.FIX:
        proposed = {
            "line_id": line_id,
            "sku": sku if sku is not None else line.sku,
            "quantity": quantity if quantity is not None else line.quantity,
        }
        if errors := line_errors(proposed):
            raise AmendmentRefused(order_id, line_id, "; ".join(errors))
    if line.void_key is not None:
        complete_void(ledger, client, order_id, line)  # an earlier amendment's, first
    fenced = ledger.amend_line(
        order_id=order_id,
        line_id=line_id,
        action=action,
        actor=actor,
        reason=reason,
        sku=sku,
        quantity=quantity,
    )
    try:
        return Amended(complete_void(ledger, client, order_id, fenced), None)
    except WarehouseError as exc:
        logger.warning("order %s line %s: the void is pending: %s", order_id, line_id, exc)
        return Amended(fenced, str(exc))
