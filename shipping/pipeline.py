"""The bodies of the ``order_intake`` tasks, as plain functions.

The DAG file only wires: each task builds its ledger and warehouse client from Airflow
Connections and calls one function here. Keeping the logic here means it runs and is
tested without Airflow, and every task process re-parses a light DAG file.

Exactly-once rests on three things: the warehouse key ``<order_id>:<line_id>`` (the same
on every retry, clear and re-run), the ledger's upserts under unique keys, and the
reducer's conditional ``SHIPPED`` transition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from shipping.errors import OrderRejected, WarehouseError
from shipping.ledger import Ledger, LineState
from shipping.order import InvalidOrder, Order, content_hash, parse_order
from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)


class LineWork(TypedDict):
    """What one mapped ``ship_item`` instance receives for its line."""

    line_id: str
    sku: str
    quantity: int


class LineResult(TypedDict):
    """What ``ship_item`` returns: small, JSON-only (it is an XCom)."""

    line_id: str
    sku: str
    shipment_id: str
    replayed: bool
    attempts: int


class Registered(TypedDict):
    """What ``register_order`` hands to the fan-out."""

    order_id: str
    ship_to: dict[str, str]
    lines: list[LineWork]


def register(ledger: Ledger, conf: Mapping[str, Any]) -> Registered:
    """Validate the order in a run's conf and record it with its lines.

    Raises:
        OrderRejected: The order breaks a rule the Params schema cannot say (duplicate
            line ids, unknown fields); it is recorded as ``REJECTED`` with the reason and
            nothing ships.
    """
    doc = dict(conf)
    try:
        order = parse_order(doc)
    except InvalidOrder as exc:
        reason = "; ".join(exc.errors)
        order_id = doc.get("order_id")
        if isinstance(order_id, str) and order_id:
            ledger.reject_order(
                order_id=order_id,
                customer_id=str(doc.get("customer_id", "")),
                reason=reason,
                content_hash=content_hash(doc),
            )
        logger.error("order %s rejected: %s", order_id, reason)
        raise OrderRejected(str(order_id), reason) from exc
    ledger.register_order(order)
    logger.info("order %s registered with %d lines", order.order_id, len(order.items))
    return _work(order)


def _work(order: Order) -> Registered:
    return {
        "order_id": order.order_id,
        "ship_to": order.ship_to.to_dict(),
        "lines": [
            {"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}
            for line in order.items
        ],
    }


def line_label(line: Mapping[str, Any]) -> str:
    """How a mapped instance is named in the Airflow UI: line id and SKU."""
    return f"line {line['line_id']} · {line['sku']}"


def ship_line(
    *,
    ledger: Ledger,
    client: WarehouseClient,
    order_id: str,
    ship_to: Mapping[str, str],
    line: LineWork,
    try_number: int,
) -> LineResult:
    """Create the shipment of one line (idempotently) and record it in the ledger.

    A line the ledger already shows as shipped is not sent again. Otherwise the client
    sends the line under its idempotency key, so a retry after an ambiguous failure gets
    the stored shipment back instead of a second one.

    Raises:
        WarehouseError: After the client's own retries; recorded on the line as its last
            error. Whether Airflow retries it is decided by the error's class.
    """
    line_id = line["line_id"]
    shipped = ledger.shipped_line(order_id=order_id, line_id=line_id)
    if shipped is not None:
        logger.info("line %s:%s already shipped as %s", order_id, line_id, shipped)
        return _result(line, shipment_id=shipped, replayed=True, attempts=0)
    if try_number > 1:
        # A retry or a clear, maybe days later: past the warehouse's key retention a
        # repeated POST would ship again, so ask the warehouse what it already has.
        found = _existing_shipment(client, order_id, line_id)
        if found is not None:
            ledger.record_shipped(
                order_id=order_id,
                line_id=line_id,
                try_number=try_number,
                requests=1,
                shipment_id=found,
            )
            logger.info("line %s:%s found shipped at the warehouse as %s", order_id, line_id, found)
            return _result(line, shipment_id=found, replayed=True, attempts=1)
    try:
        result = client.create_shipment(
            order_id=order_id,
            line_id=line_id,
            sku=line["sku"],
            quantity=line["quantity"],
            ship_to=ship_to,
        )
    except WarehouseError as exc:
        ledger.record_failed(
            order_id=order_id,
            line_id=line_id,
            try_number=try_number,
            requests=exc.attempts or 1,
            error=str(exc),
        )
        raise
    ledger.record_shipped(
        order_id=order_id,
        line_id=line_id,
        try_number=try_number,
        requests=result.attempts,
        shipment_id=result.shipment_id,
    )
    logger.info(
        "line %s:%s shipped as %s after %d request(s)%s",
        order_id,
        line_id,
        result.shipment_id,
        result.attempts,
        " (replayed)" if result.replayed else "",
    )
    return _result(
        line, shipment_id=result.shipment_id, replayed=result.replayed, attempts=result.attempts
    )


def _existing_shipment(client: WarehouseClient, order_id: str, line_id: str) -> str | None:
    for shipment in client.list_shipments(order_id):
        if shipment["line_id"] == line_id:
            return str(shipment["shipment_id"])
    return None


def _result(line: LineWork, *, shipment_id: str, replayed: bool, attempts: int) -> LineResult:
    return {
        "line_id": line["line_id"],
        "sku": line["sku"],
        "shipment_id": shipment_id,
        "replayed": replayed,
        "attempts": attempts,
    }


def finalize(ledger: Ledger, order_id: str, results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The reducer: mark the order ``SHIPPED`` once every line has a shipment.

    The ledger, not the XCom results, decides: it holds every line, including lines that
    shipped in an earlier run of the same order. The transition happens exactly once,
    whatever re-runs; later calls return the same summary.

    Raises:
        shipping.ledger.OrderIncomplete: A line has no shipment.
    """
    reported = {r["line_id"]: r["shipment_id"] for r in results}
    recorded = ledger.get_order(order_id)
    for line in recorded.lines if recorded else ():
        if line.line_id in reported and reported[line.line_id] != line.shipment_id:
            # A task reported another shipment than the ledger holds: never hide that,
            # and never finalize over it.
            raise RuntimeError(
                f"line {order_id}:{line.line_id}: task reported {reported[line.line_id]}, "
                f"ledger holds {line.shipment_id}"
            )
    finalization = ledger.finalize_order(order_id=order_id)
    status = finalization.summary
    logger.info(
        "order %s %s (%d lines)",
        order_id,
        "finalized as SHIPPED" if finalization.transitioned else "was already SHIPPED",
        len(status.lines),
    )
    summary = status.to_json()
    summary["finalized_now"] = finalization.transitioned
    summary["shipped_lines"] = sum(1 for line in status.lines if line.state == LineState.SHIPPED)
    return summary
