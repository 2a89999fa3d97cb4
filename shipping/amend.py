"""Operators' corrections of a failed line: fix its SKU or quantity, or cancel it.

A line the warehouse refused fails again on every retry, because a retry cannot change
what the task reads from Airflow. A correction is recorded in the ledger instead, which
the line's task reads when it runs again; the caller then retries the line (``shipping
retry`` or a clear in the UI). Only a FAILED line without a shipment can be corrected,
and the warehouse must agree that it has none: a line that did ship (the ledger missed
it) is reconciled, not amended. The line keeps its key ``<order_id>:<line_id>``: the
warehouse stores nothing for a refused request, and a line committed under its old
content is caught by the lookup before the post (another content under the key is a
final ``ShipmentConflict``).
"""

from __future__ import annotations

import logging

from shipping.errors import AmendmentRefused
from shipping.ledger import Amendment, Ledger, LineStatus, amendment_refusal
from shipping.order import line_errors
from shipping.warehouse import WarehouseClient

__all__ = ["amend_line"]

logger = logging.getLogger(__name__)


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
) -> LineStatus:
    """Fix or cancel a failed line with no shipment, and record who, when and why.

    Returns:
        The line after the correction.

    Raises:
        shipping.errors.OrderNotFound: No such order or line.
        AmendmentRefused: The line is not FAILED, has a shipment (in the ledger or at the
            warehouse), the new values break the order's rules, or nothing changes.
        shipping.errors.WarehouseError: The warehouse cannot be asked.
    """
    line = ledger.get_line(order_id=order_id, line_id=line_id)
    # The ledger's rule first (it says "SHIPPED as ..."), the warehouse's truth next.
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
    found = client.find_shipment(order_id=order_id, line_id=line_id)
    if found is not None:
        raise AmendmentRefused(
            order_id,
            line_id,
            f"the warehouse holds shipment {found.get('shipment_id')} for this line; "
            f"reconcile it (shipping reconcile {order_id} --repair) instead",
        )
    return ledger.amend_line(
        order_id=order_id,
        line_id=line_id,
        action=action,
        actor=actor,
        reason=reason,
        sku=sku,
        quantity=quantity,
    )
