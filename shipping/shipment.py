"""A shipment as the warehouse holds it, and the one rule that says whose it is.

"Is this shipment this line's?" is decided here and nowhere else: by the pipeline before
it adopts a shipment it finds under a line's key, by the ledger before it records a line
shipped, and by reconciliation. A shipment is the line's when it is live (not cancelled)
and its order, line, SKU, quantity and address are the line's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

#: The warehouse's status of a shipment that was cancelled (its key voided).
CANCELLED: Final = "cancelled"


@dataclass(frozen=True)
class LineContent:
    """What a line asks the warehouse to ship."""

    order_id: str
    line_id: str
    sku: str
    quantity: int
    ship_to: Mapping[str, Any]


@dataclass(frozen=True)
class Shipment:
    """One shipment of the warehouse.

    Attributes:
        shipment_id: The warehouse's id.
        idempotency_key: The key it was created under (None if the warehouse did not say).
        order_id: Its order.
        line_id: Its line.
        sku: What it ships.
        quantity: How many.
        ship_to: Where to.
        status: ``created``, or ``cancelled`` once its key was voided.
    """

    shipment_id: str
    idempotency_key: str | None
    order_id: str
    line_id: str
    sku: str
    quantity: int
    ship_to: Mapping[str, Any]
    status: str

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Shipment:
        """A shipment from the warehouse's JSON.

        Raises:
            ValueError: A field is missing or has the wrong type.
        """
        try:
            quantity = document["quantity"]
            ship_to = document.get("ship_to") or {}
            if not isinstance(quantity, int) or not isinstance(ship_to, Mapping):
                raise TypeError("quantity or ship_to")
            key = document.get("idempotency_key")
            return cls(
                shipment_id=str(document["shipment_id"]),
                idempotency_key=str(key) if key is not None else None,
                order_id=str(document["order_id"]),
                line_id=str(document["line_id"]),
                sku=str(document["sku"]),
                quantity=quantity,
                ship_to=dict(ship_to),
                status=str(document.get("status") or "created"),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a shipment: {exc}") from None

    @property
    def live(self) -> bool:
        """Whether it still ships (it was not cancelled)."""
        return self.status != CANCELLED

    def differences(self, line: LineContent) -> list[str]:
        """The fields in which this shipment is not ``line``'s, sorted; empty if it is."""
        wanted = {
            "order_id": line.order_id,
            "line_id": line.line_id,
            "sku": line.sku,
            "quantity": line.quantity,
            "ship_to": dict(line.ship_to),
        }
        mine = {
            "order_id": self.order_id,
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "ship_to": dict(self.ship_to),
        }
        return sorted(field for field, value in wanted.items() if mine[field] != value)

    def is_shipment_of(self, line: LineContent) -> bool:
        """Whether this is a live shipment of exactly ``line``."""
        return self.live and not self.differences(line)
