"""``shipping fix``, ``cancel`` and ``reconcile``: correct failed lines, compare with the warehouse."""

from __future__ import annotations

import json
from typing import Any

from shipping.errors import OrderNotFound
from shipping.ops.cli import common
from shipping.ops.cli.common import (
    EXIT_DRIFT_OR_TIMEOUT,
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
    actor,
    find_order,
)
from shipping.ops.cli.orders import retry


def amend(order_id: str, line_id: str, *, action: str, reason: str, **new: Any) -> int:
    """Fix or cancel a failed line (ledger, warehouse check), then retry it."""
    from shipping.amend import amend_line
    from shipping.errors import AmendmentRefused
    from shipping.ledger import Amendment

    with common.open_ledger() as ledger, common.open_warehouse() as client:
        find_order(ledger, order_id)
        try:
            amended = amend_line(
                ledger,
                client,
                order_id=order_id,
                line_id=line_id,
                action=Amendment(action),
                actor=actor(),
                reason=reason,
                **new,
            )
        except OrderNotFound as exc:
            raise CliError(str(exc)) from exc
        except AmendmentRefused as exc:
            raise CliError(f"refused: {exc}", EXIT_REFUSED) from exc
    line = amended.line
    done = (
        f"cancelled ({line.state})"
        if action == "CANCEL"
        else f"fixed: now {line.sku} x{line.quantity} under key {line.idempotency_key}"
    )
    print(f"line {line_id} of order {order_id} {done}")
    if amended.void_error:
        print(
            f"the old key could not be voided at the warehouse yet ({amended.void_error}); "
            "the line's retry does it first"
        )
    return retry(order_id, [line_id])


# ---------------------------------------------------------------- reconcile
def reconcile(order_id: str | None, *, repair: bool, as_json: bool) -> int:
    """Compare the ledger with the warehouse; 0 clean, 4 drift left."""
    from shipping.reconcile import reconcile as run

    with common.open_ledger() as ledger, common.open_warehouse() as client:
        order_ids = [order_id] if order_id else ledger.order_ids()
        try:
            report = run(ledger, client, order_ids, fix=repair, actor=actor())
        except OrderNotFound as exc:
            raise CliError(f"unknown order {order_id!r}") from exc
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for item in report.repaired:
            print(
                f"repaired: order {item.order_id} line {item.line_id}: {item.change} "
                f"({item.shipment_id})"
            )
        for drift in report.drift:
            hint = " (repairable: --repair)" if drift.repairable else ""
            print(
                f"drift: order {drift.order_id} line {drift.line_id}: {drift.kind}: "
                f"{drift.detail}{hint}"
            )
        verdict = "clean" if report.clean else f"{len(report.drift)} drift(s)"
        print(f"{report.orders_checked} order(s) checked: {verdict}")
    return EXIT_OK if report.clean else EXIT_DRIFT_OR_TIMEOUT
