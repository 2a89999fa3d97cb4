"""Reconcile the ledger with the warehouse: find each kind of drift, repair what is safe.

The warehouse is the truth about shipments; the ledger is the pipeline's record of them.
They drift when a process dies between the warehouse's answer and the ledger's write, or
when someone ships or edits outside the pipeline. :func:`check_order` compares one order
line by line with this client's shipments (one listing per order); cancelled shipments
(their key voided) do not ship and count only where the ledger records one as shipped::

    UNRECORDED_SHIPMENT   the warehouse holds a live shipment the ledger does not know, or
                          records as not shipped
    UNKNOWN_TO_WAREHOUSE  the ledger records a shipment the warehouse does not hold, or
                          holds cancelled
    CONTENT_DIFFERS       the two disagree on a line's shipment id, SKU, quantity or address
    SEVERAL_SHIPMENTS     more than one live shipment for one line
    VOID_PENDING          an amendment's void at the warehouse is not confirmed yet

Each drift says how :func:`repair` ends it, if it can (``repair``):

* ``adopt``: a live shipment with exactly the line's content, under the line's current
  key, for a line that is PENDING or FAILED: recorded SHIPPED, through the ledger's fence
  (if the line was amended since the check read it, nothing is recorded);
* ``void``: a live shipment that is not the line's (other content, an old key, a
  cancelled line, or a second one beside the recorded one) is voided at the warehouse,
  with a VOID amendment in the ledger; if it held the line's current key the line moves
  to a new key, so its next try (``shipping retry``) ships the ledger's content;
* ``complete_void``: the pending void is done.

A line the ledger records as shipped is never changed: its drift is for an operator.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shipping.errors import (
    AmendmentRefused,
    DriftFound,
    LineFenced,
    OrderNotFound,
    ShipmentConflict,
)
from shipping.ledger import Amendment, Ledger, LineState, LineStatus, OrderStatus
from shipping.pipeline import complete_void
from shipping.shipment import LineContent, Shipment
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
    VOID_PENDING = "VOID_PENDING"


@dataclass(frozen=True)
class Drift:
    """One disagreement, with what an operator needs to act on it.

    Attributes:
        order_id: The order.
        line_id: The line (the warehouse's line id when the ledger has no such line).
        kind: What disagrees.
        detail: The disagreement in words.
        shipment_ids: The warehouse shipments concerned.
        repairable: ``repair`` can end it.
        repair: How: ``adopt``, ``void`` or ``complete_void`` (None: an operator's).
        shipments: The shipments concerned, as the check saw them.
        revision: The line's revision the check read (the fence of an adoption).
    """

    order_id: str
    line_id: str
    kind: DriftKind
    detail: str
    shipment_ids: tuple[str, ...] = ()
    repairable: bool = False
    repair: str | None = None
    shipments: tuple[Shipment, ...] = field(default=(), repr=False, compare=False)
    revision: int = field(default=0, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The drift in ``shipping reconcile --json``."""
        return {
            "order_id": self.order_id,
            "line_id": self.line_id,
            "kind": self.kind.value,
            "detail": self.detail,
            "shipment_ids": list(self.shipment_ids),
            "repairable": self.repairable,
            "repair": self.repair,
        }


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
    by_line: dict[str, list[Shipment]] = defaultdict(list)
    for shipment in client.shipments_of(order_id):
        by_line[shipment.line_id].append(shipment)
    drift = [d for line in status.lines for d in _check_line(status, line, by_line)]
    known = {line.line_id for line in status.lines}
    for line_id, shipments in by_line.items():
        live = [s for s in shipments if s.live]
        if line_id not in known and live:
            drift.append(
                Drift(
                    order_id,
                    line_id,
                    DriftKind.UNRECORDED_SHIPMENT,
                    f"the warehouse holds shipments for line {line_id!r}, which the order "
                    "does not have",
                    _ids(live),
                )
            )
    return drift


def _check_line(
    order: OrderStatus, line: LineStatus, by_line: Mapping[str, list[Shipment]]
) -> Iterable[Drift]:
    shipments = by_line.get(line.line_id, [])
    content = LineContent(
        order.order_id, line.line_id, line.sku, line.quantity, order.ship_to or {}
    )

    def drift(
        kind: DriftKind, detail: str, found: Iterable[Shipment] = (), how: str | None = None
    ) -> Drift:
        found = tuple(found)
        return Drift(
            order.order_id,
            line.line_id,
            kind,
            detail,
            _ids(found),
            repairable=how is not None,
            repair=how,
            shipments=found,
            revision=line.revision,
        )

    if line.void_key is not None:
        yield drift(
            DriftKind.VOID_PENDING,
            f"key {line.void_key!r} is still to be voided at the warehouse",
            how="complete_void",
        )
    if line.state is LineState.SHIPPED:
        recorded = [s for s in shipments if s.shipment_id == line.shipment_id]
        others = [s for s in shipments if s.live and s.shipment_id != line.shipment_id]
        if not recorded:
            yield drift(
                DriftKind.UNKNOWN_TO_WAREHOUSE,
                f"the ledger records shipment {line.shipment_id}, the warehouse has none",
            )
        elif not recorded[0].live:
            yield drift(
                DriftKind.UNKNOWN_TO_WAREHOUSE,
                f"the ledger records shipment {line.shipment_id}, the warehouse cancelled it",
                recorded,
            )
        elif differ := recorded[0].differences(content):
            yield drift(
                DriftKind.CONTENT_DIFFERS,
                f"shipment {line.shipment_id}'s {', '.join(differ)} differ(s) from the ledger's",
                recorded,
            )
        if others:
            yield drift(
                DriftKind.SEVERAL_SHIPMENTS,
                f"{len(others)} more live shipment(s) beside the recorded "
                f"{line.shipment_id}: {', '.join(_ids(others))}",
                others,
                how="void",
            )
        return
    # A shipment under the key being voided is the VOID_PENDING drift's, reported above.
    for shipment in (s for s in shipments if s.live and s.idempotency_key != line.void_key):
        if line.state is LineState.CANCELLED or line.state is LineState.CANCELLING:
            yield drift(
                DriftKind.UNRECORDED_SHIPMENT,
                f"the line is {line.state}, the warehouse holds live shipment "
                f"{shipment.shipment_id}",
                [shipment],
                how="void",
            )
        elif shipment.idempotency_key != line.idempotency_key:
            yield drift(
                DriftKind.SEVERAL_SHIPMENTS,
                f"live shipment {shipment.shipment_id} under the line's old key "
                f"{shipment.idempotency_key!r} (the line ships under "
                f"{line.idempotency_key!r})",
                [shipment],
                how="void",
            )
        elif differ := shipment.differences(content):
            yield drift(
                DriftKind.CONTENT_DIFFERS,
                f"the warehouse holds shipment {shipment.shipment_id} under the line's key, "
                f"its {', '.join(differ)} differ(s) from the line's; the ledger records the "
                f"line {line.state}",
                [shipment],
                how="void",
            )
        else:
            yield drift(
                DriftKind.UNRECORDED_SHIPMENT,
                f"the warehouse holds shipment {shipment.shipment_id}; the ledger records "
                f"the line {line.state}",
                [shipment],
                how=None if line.void_key is not None else "adopt",
            )


def _ids(shipments: Iterable[Shipment]) -> tuple[str, ...]:
    return tuple(s.shipment_id for s in shipments)


def repair(
    ledger: Ledger, client: WarehouseClient, drift: Iterable[Drift], *, actor: str
) -> list[Repair]:
    """End each repairable drift (see the module's docstring); never ship anything.

    Every change goes through the ledger's fence: a line amended since the check read it
    is left alone (the check after the repair shows what remains).

    Returns:
        What changed, one entry per change.
    """
    repaired: list[Repair] = []
    for item in drift:
        try:
            repaired.extend(_repair_one(ledger, client, item, actor=actor))
        except (LineFenced, ShipmentConflict, AmendmentRefused) as exc:
            logger.warning(
                "reconcile: order %s line %s not repaired: %s", item.order_id, item.line_id, exc
            )
    return repaired


def _repair_one(
    ledger: Ledger, client: WarehouseClient, item: Drift, *, actor: str
) -> Iterable[Repair]:
    if item.repair == "complete_void":
        line = ledger.get_line(order_id=item.order_id, line_id=item.line_id)
        if line.void_key is not None:
            key = line.void_key
            after = complete_void(ledger, client, item.order_id, line)
            yield Repair(item.order_id, item.line_id, "", f"key {key} voided (line {after.state})")
    elif item.repair == "adopt":
        [shipment] = item.shipments
        ledger.record_shipped(
            order_id=item.order_id,
            line_id=item.line_id,
            try_number=RECONCILE_TRY,
            requests=0,
            shipment=shipment,
            revision=item.revision,
        )
        logger.warning(
            "reconcile: order %s line %s adopted shipment %s",
            item.order_id,
            item.line_id,
            shipment.shipment_id,
        )
        yield Repair(item.order_id, item.line_id, shipment.shipment_id, "line recorded SHIPPED")
    elif item.repair == "void":
        for shipment in item.shipments:
            if shipment.idempotency_key is None:
                continue  # the warehouse did not say its key: nothing to void by
            line = ledger.amend_line(
                order_id=item.order_id,
                line_id=item.line_id,
                action=Amendment.VOID,
                actor=actor,
                reason=f"reconcile: {item.kind}: {item.detail}",
                void_key=shipment.idempotency_key,
            )
            complete_void(ledger, client, item.order_id, line)
            yield Repair(
                item.order_id,
                item.line_id,
                shipment.shipment_id,
                f"shipment cancelled (key {shipment.idempotency_key} voided); the line ships "
                f"under {line.idempotency_key}",
            )


def reconcile(
    ledger: Ledger,
    client: WarehouseClient,
    order_ids: Iterable[str],
    *,
    fix: bool = False,
    actor: str = "reconcile",
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
            report.repaired.extend(repair(ledger, client, found, actor=actor))
            found = check_order(ledger, client, order_id)
        report.drift.extend(found)
    return report
