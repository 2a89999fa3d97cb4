"""Reconcile the ledger with the warehouse: find each kind of drift, repair what is safe.

The warehouse is the truth about shipments; the ledger is the pipeline's record of them.
They drift when a process dies between the warehouse's answer and the ledger's write, or
when someone ships or edits outside the pipeline. :func:`check_order` compares one order
line by line with this client's shipments (one listing per order)::

    UNRECORDED_SHIPMENT   the warehouse holds a shipment the ledger does not know, or
                          records as not shipped (repairable when its content is the line's)
    UNKNOWN_TO_WAREHOUSE  the ledger records a shipment the warehouse does not hold
    CONTENT_DIFFERS       the two disagree on a line's shipment id, SKU, quantity or address
    SEVERAL_SHIPMENTS     more than one shipment for one line

:func:`repair` adopts warehouse truth into the ledger where that is safe (a shipment with
exactly the line's content, for a line that is PENDING or FAILED). It never creates or
cancels a shipment, and never overwrites a line the ledger records as shipped or
cancelled: those drifts are for an operator.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shipping.errors import DriftFound, OrderNotFound
from shipping.ledger import Ledger, LineState, LineStatus, OrderStatus
from shipping.warehouse import WarehouseClient

__all__ = [
    "Drift",
    "DriftFound",
    "DriftKind",
    "Repair",
    "Report",
    "check_order",
    "reconcile",
    "repair",
]

logger = logging.getLogger(__name__)

#: The try number recorded for a shipment adopted by reconciliation (tasks start at 1).
RECONCILE_TRY = 0


class DriftKind(StrEnum):
    """How the ledger and the warehouse disagree about a line."""

    UNRECORDED_SHIPMENT = "UNRECORDED_SHIPMENT"
    UNKNOWN_TO_WAREHOUSE = "UNKNOWN_TO_WAREHOUSE"
    CONTENT_DIFFERS = "CONTENT_DIFFERS"
    SEVERAL_SHIPMENTS = "SEVERAL_SHIPMENTS"


@dataclass(frozen=True)
class Drift:
    """One disagreement, with what an operator needs to act on it.

    Attributes:
        order_id: The order.
        line_id: The line (the warehouse's line id when the ledger has no such line).
        kind: What disagrees.
        detail: The disagreement in words.
        shipment_ids: The warehouse shipments concerned.
        repairable: ``repair`` can adopt the warehouse's truth safely.
    """

    order_id: str
    line_id: str
    kind: DriftKind
    detail: str
    shipment_ids: tuple[str, ...] = ()
    repairable: bool = False

    def to_json(self) -> dict[str, Any]:
        """The drift in ``shipping reconcile --json``."""
        return {**asdict(self), "kind": self.kind.value, "shipment_ids": list(self.shipment_ids)}


@dataclass(frozen=True)
class Repair:
    """What :func:`repair` changed in the ledger."""

    order_id: str
    line_id: str
    shipment_id: str
    change: str

    def to_json(self) -> dict[str, Any]:
        """The repair in ``shipping reconcile --json``."""
        return asdict(self)


@dataclass
class Report:
    """The outcome of a reconciliation."""

    orders_checked: int = 0
    drift: list[Drift] = field(default_factory=list)
    repaired: list[Repair] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No drift left."""
        return not self.drift

    def to_json(self) -> dict[str, Any]:
        """The report as ``shipping reconcile --json`` prints it."""
        return {
            "clean": self.clean,
            "orders_checked": self.orders_checked,
            "drift": [d.to_json() for d in self.drift],
            "repaired": [r.to_json() for r in self.repaired],
        }


def check_order(ledger: Ledger, client: WarehouseClient, order_id: str) -> list[Drift]:
    """Every drift between the ledger's record of ``order_id`` and the warehouse.

    Raises:
        OrderNotFound: The ledger does not know the order.
        shipping.errors.WarehouseError: The warehouse cannot be asked.
    """
    status = ledger.get_order(order_id)
    if status is None:
        raise OrderNotFound(order_id)
    by_line: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for shipment in client.list_shipments(order_id):
        by_line[str(shipment.get("line_id"))].append(shipment)
    drift = [d for line in status.lines for d in _check_line(status, line, by_line)]
    known = {line.line_id for line in status.lines}
    for line_id, shipments in by_line.items():
        if line_id not in known:
            drift.append(
                Drift(
                    order_id,
                    line_id,
                    DriftKind.UNRECORDED_SHIPMENT,
                    f"the warehouse holds shipments for line {line_id!r}, which the order "
                    "does not have",
                    _ids(shipments),
                )
            )
    return drift


def _check_line(
    order: OrderStatus, line: LineStatus, by_line: Mapping[str, list[Mapping[str, Any]]]
) -> Iterable[Drift]:
    shipments = by_line.get(line.line_id, [])
    ids = _ids(shipments)

    def drift(kind: DriftKind, detail: str, *, repairable: bool = False) -> Drift:
        return Drift(order.order_id, line.line_id, kind, detail, ids, repairable)

    if len(shipments) > 1:
        yield drift(
            DriftKind.SEVERAL_SHIPMENTS,
            f"{len(shipments)} shipments for one line: {', '.join(ids)}",
        )
        return
    shipment = shipments[0] if shipments else None
    if line.state is LineState.SHIPPED:
        if shipment is None:
            yield drift(
                DriftKind.UNKNOWN_TO_WAREHOUSE,
                f"the ledger records shipment {line.shipment_id}, the warehouse has none",
            )
        elif shipment.get("shipment_id") != line.shipment_id:
            yield drift(
                DriftKind.CONTENT_DIFFERS,
                f"the ledger records shipment {line.shipment_id}, the warehouse holds {ids[0]}",
            )
        elif differ := _differences(order, line, shipment):
            yield drift(DriftKind.CONTENT_DIFFERS, f"{differ} differ(s) from the ledger's")
        return
    if shipment is None:
        return  # not shipped on either side
    differ = _differences(order, line, shipment)
    repairable = line.state in (LineState.PENDING, LineState.FAILED) and not differ
    detail = f"the warehouse holds shipment {ids[0]}; the ledger records the line {line.state}"
    if differ:
        detail += f", and the shipment's {differ} differ(s) from the line's"
    yield drift(DriftKind.UNRECORDED_SHIPMENT, detail, repairable=repairable)


def _differences(order: OrderStatus, line: LineStatus, shipment: Mapping[str, Any]) -> str:
    wanted = {"sku": line.sku, "quantity": line.quantity, "ship_to": order.ship_to}
    return ", ".join(sorted(k for k, v in wanted.items() if shipment.get(k) != v))


def _ids(shipments: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    return tuple(str(s.get("shipment_id")) for s in shipments)


def repair(ledger: Ledger, drift: Iterable[Drift]) -> list[Repair]:
    """Adopt each repairable shipment into the ledger; never touch the warehouse.

    Returns:
        What changed, one entry per line.
    """
    repaired = []
    for item in drift:
        if not item.repairable:
            continue
        [shipment_id] = item.shipment_ids
        ledger.record_shipped(
            order_id=item.order_id,
            line_id=item.line_id,
            try_number=RECONCILE_TRY,
            requests=0,
            shipment_id=shipment_id,
        )
        logger.warning(
            "reconcile: order %s line %s adopted shipment %s",
            item.order_id,
            item.line_id,
            shipment_id,
        )
        repaired.append(Repair(item.order_id, item.line_id, shipment_id, "line recorded SHIPPED"))
    return repaired


def reconcile(
    ledger: Ledger, client: WarehouseClient, order_ids: Iterable[str], *, fix: bool = False
) -> Report:
    """Check every order in ``order_ids``; with ``fix``, repair and check again.

    Raises:
        OrderNotFound: An order the ledger does not know.
        shipping.errors.WarehouseError: The warehouse cannot be asked.
    """
    report = Report()
    for order_id in order_ids:
        found = check_order(ledger, client, order_id)
        report.orders_checked += 1
        if fix and any(d.repairable for d in found):
            report.repaired.extend(repair(ledger, found))
            found = check_order(ledger, client, order_id)
        report.drift.extend(found)
    return report
